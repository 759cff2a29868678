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
