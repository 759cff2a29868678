"""The built-in reward components (registered on import; see :mod:`.registry`).

==================  =========  ===============================================================
name                placement  what
==================  =========  ===============================================================
``correct``         reward     1/0: the task's verifier (``Task.verify_batch``; math-verify)
``format``          reward     1/0 final answer present in the task's format
``overlong``        reward     DAPO soft overlong punishment (``reward.overlong_buffer``)
``length``          reward     linear length cost (``reward.length_coef``)
``kimi_length``     reward     Kimi k1.5 group length reward
``ttrl``            reward     agreement with the group's majority answer (no label)
``empo``            reward     share of the group in the sample's answer cluster (no label)
``self_certainty``  reward     mean ``KL(U || p)`` over response tokens (INTUITOR)
``oracle_steps``    reward     fraction of right steps; fills ``step_scores`` (1 right, 0
                               wrong) and ``step_verdicts`` from the task's oracle step labels
``prm``             reward     min PRM step score; fills ``step_scores`` from the
                               checkpoint at ``prm.path`` (``experiments.train_prm``)
``judge``           reward     CAPO generative judge; fills ``step_verdicts`` from N sampled
                               critiques (``judge.*``)
``explore``         advantage  UCB bonus over final answers seen for the prompt (``explore.*``)
``batch_penalty``   advantage  ``-(#same answer in the group - 1) / G``
==================  =========  ===============================================================

The weight of ``explore`` / ``batch_penalty`` is the paper's coefficient ``c`` (Song, Kempe &
Munos 2025, arXiv 2509.06941).
"""

from __future__ import annotations

import numpy as np

from jaxrl_reason.rewards.registry import RewardContext, register_reward

NONE_KEY = "<none>"


@register_reward("correct")
def correct(ctx: RewardContext) -> np.ndarray:
    """The task verifier's outcome (the one route for correctness: computed once per step)."""
    return np.asarray(ctx.correct, np.float32)


@register_reward("format")
def format_(ctx: RewardContext) -> np.ndarray:
    """1 when the response states its final answer in the task's format, else 0."""
    from jaxrl_reason.rewards import shaping

    fmt = getattr(ctx.task, "verify_format", "auto")
    return shaping.format_reward(ctx.responses, fmt if fmt in shaping.FORMAT_CHOICES else "auto")


@register_reward("overlong")
def overlong(ctx: RewardContext) -> np.ndarray:
    """DAPO soft overlong punishment over the last ``reward.overlong_buffer`` tokens."""
    from jaxrl_reason.rewards import shaping

    buf = min(int(ctx.config.get("overlong_buffer", 16)), int(ctx.max_len))
    return np.asarray(shaping.overlong_penalty(ctx.lengths, ctx.max_len, buf), np.float32)


@register_reward("length")
def length(ctx: RewardContext) -> np.ndarray:
    """Linear length cost ``-coef * L / max_len`` (``reward.length_coef``)."""
    from jaxrl_reason.rewards import shaping

    coef = float(ctx.config.get("length_coef", 1.0))
    return np.asarray(shaping.length_penalty(ctx.lengths, ctx.max_len, coef), np.float32)


@register_reward("kimi_length")
def kimi_length(ctx: RewardContext) -> np.ndarray:
    """Kimi k1.5 length reward within each group (needs the verifier's outcome)."""
    from jaxrl_reason.rewards import shaping

    g = np.asarray(ctx.group_ids)
    return np.asarray(
        shaping.kimi_length_reward(ctx.lengths, ctx.correct, g, int(g.max()) + 1), np.float32
    )


def _answer_ids(ctx: RewardContext) -> tuple[np.ndarray, np.ndarray]:
    from jaxrl_reason.rewards.canonical import keys_to_ids

    ids = np.asarray(keys_to_ids(ctx.keys), np.int32)
    valid = np.asarray([k != NONE_KEY for k in ctx.keys])
    return ids, valid


@register_reward("ttrl")
def ttrl(ctx: RewardContext) -> np.ndarray:
    """TTRL (arXiv 2504.16084): 1 when the answer equals the group's majority answer."""
    from jaxrl_reason.rewards.labelfree import ttrl_rewards

    ids, valid = _answer_ids(ctx)
    return np.asarray(ttrl_rewards(ids, ctx.group_ids, valid)[0], np.float32)


@register_reward("empo")
def empo(ctx: RewardContext) -> np.ndarray:
    """EMPO (arXiv 2504.05812): the share of the group in the sample's answer cluster."""
    from jaxrl_reason.rewards.labelfree import empo_rewards

    ids, valid = _answer_ids(ctx)
    return np.asarray(empo_rewards(ids, ctx.group_ids, valid)[0], np.float32)


@register_reward("self_certainty", needs=("self_certainty",))
def self_certainty(ctx: RewardContext) -> np.ndarray:
    """INTUITOR (arXiv 2505.19590): mean over response tokens of ``KL(U || p)``."""
    if ctx.self_certainty is None:
        raise ValueError("reward component 'self_certainty' needs RewardContext.self_certainty")
    return np.asarray(ctx.self_certainty, np.float32)


def exploration_config(settings):
    """:class:`~jaxrl_reason.rewards.exploration.ExplorationConfig` from ``config.explore``
    with ``coef = 1`` (the component's weight is the paper's ``c``)."""
    from jaxrl_reason.rewards.exploration import ExplorationConfig

    kw = {k: v for k, v in dict(settings or {}).items() if k not in ("coef", "placement")}
    return ExplorationConfig(coef=1.0, **kw)


@register_reward("explore", placement="advantage", needs=("state",))
def explore(ctx: RewardContext) -> np.ndarray:
    """UCB bonus over final answers (``explore.variant``; the answer history is run state,
    kept in ``ctx.state["answer_history"]`` and checkpointed by the trainer)."""
    from jaxrl_reason.rewards.exploration import exploration_bonus

    cfg = exploration_config(ctx.config.get("explore"))
    history = ctx.state.get("answer_history")
    if history is None and cfg.variant != "batch":
        history = ctx.state["answer_history"] = cfg.make_history()
    return exploration_bonus(
        cfg, history, ctx.prompt_ids, ctx.keys, np.asarray(ctx.group_ids), ctx.correct
    )


@register_reward("batch_penalty", placement="advantage")
def batch_penalty(ctx: RewardContext) -> np.ndarray:
    """Within-group repetition penalty ``-(#{j: a_j = a_i} - 1) / G`` (batch exploration)."""
    from jaxrl_reason.rewards.exploration import batch_repetition_penalty

    ids, _ = _answer_ids(ctx)
    return np.asarray(batch_repetition_penalty(ids, np.asarray(ctx.group_ids)), np.float32)


@register_reward("oracle_steps", supplies=("step_scores", "step_verdicts"))
def oracle_steps(ctx: RewardContext) -> dict[str, np.ndarray]:
    """Oracle step labels of tasks that know every intermediate value (``arith_chain``).

    ``step_scores[b, k]`` is 1 when step ``k`` of response ``b`` holds the right value, else
    0; ``step_verdicts[b, 0, k]`` is its negation (one judgement, True = wrong step: CAPO's
    layout); the reward is the fraction of right steps. Steps past ``S = max_steps`` fold
    into step ``S - 1`` (its label is the AND of the folded ones), as the step ids do.
    """
    task = ctx.task
    if task is None or not hasattr(task, "step_labels"):
        raise ValueError(
            "reward component 'oracle_steps' needs a task with oracle step labels "
            f"(task.name='arith_chain'); got {getattr(task, 'name', task)!r}"
        )
    b, s = len(ctx.responses), int(ctx.max_steps)
    scores = np.zeros((b, s), np.float32)
    frac = np.zeros(b, np.float32)
    for i, (resp, ex) in enumerate(zip(ctx.responses, ctx.examples, strict=True)):
        lab = np.asarray(task.step_labels(resp, ex), np.float32)
        if lab.size == 0:
            continue
        frac[i] = lab.mean()
        k = min(lab.size, s)
        scores[i, :k] = lab[:k]
        if lab.size > s:
            scores[i, s - 1] = lab[s - 1 :].min()
    return {"reward": frac, "step_scores": scores, "step_verdicts": (scores < 0.5)[:, None, :]}


def _step_valid(traj, num_steps: int) -> np.ndarray:
    """``bool[B, S]``: steps present in each row's ``segment_id``."""
    seg = np.asarray(traj.segment_id)
    return (seg[:, None, :] == np.arange(num_steps)[None, :, None]).any(-1)


_PRM_CACHE: dict[str, object] = {}


def load_prm_cached(path: str):
    """:func:`jaxrl_reason.models.prm.load_prm`, once per path per process."""
    import os

    from jaxrl_reason.models.prm import load_prm

    key = os.path.abspath(path)
    if key not in _PRM_CACHE:
        _PRM_CACHE[key] = load_prm(key)
    return _PRM_CACHE[key]


@register_reward("prm", needs=("trajectories",), supplies=("step_scores",))
def prm(ctx: RewardContext) -> dict[str, np.ndarray]:
    """A trained discriminative PRM (``prm.path``, written by ``experiments.train_prm``).

    ``step_scores[b, s] = sigmoid(head(h at the last token of step s))`` in ``[0, 1]`` (the
    probability the step is right: the oracle's scale, so PURE reads it the same way); 0 on
    steps the response lacks. The reward is the min over the response's steps (PURE's
    min-form value of the whole response, Cheng et al. 2025, arXiv 2504.15275), 0 with none.
    The PRM reads the policy's token ids: it must share the policy's tokenizer.
    """
    path = dict(ctx.config.get("prm") or {}).get("path", "")
    if not path:
        raise ValueError("reward component 'prm' needs prm.path (a train_prm checkpoint)")
    if ctx.trajectories is None:
        raise ValueError("reward component 'prm' needs RewardContext.trajectories")
    traj = ctx.trajectories
    s = int(ctx.max_steps)
    scores = load_prm_cached(path).scores(
        traj.prompt_tokens, traj.prompt_mask, traj.tokens, traj.segment_id, s
    )
    valid = _step_valid(traj, s)
    reward = np.where(valid.any(-1), np.where(valid, scores, np.inf).min(-1), 0.0)
    return {"reward": reward.astype(np.float32), "step_scores": scores.astype(np.float32)}


def step_texts(tokenizer, tokens: np.ndarray, segment_id: np.ndarray, num_steps: int):
    """The decoded text of each step of each row (``list[list[str]]``, empty steps dropped)."""
    out = []
    for row, seg in zip(np.asarray(tokens), np.asarray(segment_id), strict=True):
        out.append(
            [
                tokenizer.decode(row[seg == k].tolist(), skip_special_tokens=True)
                for k in range(num_steps)
                if (seg == k).any()
            ]
        )
    return out


@register_reward("judge", needs=("trajectories", "judge_fn"), supplies=("step_verdicts",))
def judge(ctx: RewardContext) -> dict[str, np.ndarray]:
    """CAPO's generative judge (Xie et al. 2025, arXiv 2508.02298): ``judge.num_judgements``
    sampled critiques of every response (:func:`jaxrl_reason.rewards.judge.judge_prompt`),
    parsed into per-step verdicts (:func:`~jaxrl_reason.rewards.judge.parse_verdicts`).

    ``step_verdicts[b, n, s]`` is True when critique ``n`` calls step ``s`` wrong; an
    abstention (step not mentioned, unparseable text) is False, i.e. it never flags a step,
    so garbage judgements leave every step unflagged. The reward is the fraction of the
    response's steps that a strict majority of critiques does not flag.
    """
    from jaxrl_reason.rewards.judge import judge_prompt, verdict_array

    if ctx.trajectories is None or ctx.judge_fn is None or ctx.tokenizer is None:
        raise ValueError(
            "reward component 'judge' needs RewardContext.trajectories, tokenizer and judge_fn "
            "(the trainer builds them when reward.step_scorer='judge')"
        )
    traj, s = ctx.trajectories, int(ctx.max_steps)
    steps = step_texts(ctx.tokenizer, traj.tokens, traj.segment_id, s)
    prompts = [judge_prompt(ex.prompt, st) for ex, st in zip(ctx.examples, steps, strict=True)]
    verdicts = verdict_array(ctx.judge_fn(prompts), s)  # [B, N, S]
    wrong = verdicts == -1
    valid = _step_valid(traj, s)
    flagged = 2 * wrong.sum(1) > wrong.shape[1]
    ok = (~flagged & valid).sum(-1) / np.maximum(valid.sum(-1), 1)
    return {"reward": ok.astype(np.float32), "step_verdicts": wrong}
