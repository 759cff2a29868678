"""One RL step as four plain functions over :class:`~jaxrl_reason.rollout.Trajectories`.

::

    traj          = collect(strategy, policy, examples, key)      rollout strategy (device)
    traj, scored  = score(traj, examples, scorer)                 verifiers, reward components
    traj          = assign_credit(credit_fn, traj, scored.bonus)  estimator by name (jit)
    state, m      = update(...)                                   log-probs, loss, optax (jit)

Model forwards that a phase may need (reference log-probs, critic values, self-certainty)
are passed in as functions, so the phases themselves hold no model and no state; the
:class:`~jaxrl_reason.train.loop.Trainer` wires them together.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_reason import credit
from jaxrl_reason.rollout.trajectories import Trajectories

__all__ = [
    "CreditFn",
    "Scored",
    "Scorer",
    "assign_credit",
    "collect",
    "informative_groups",
    "make_credit_fn",
    "outcome_token_rewards",
    "prof_filter",
    "score",
    "select_groups",
    "update_batch",
]


def collect(strategy: Any, policy: Any, examples: Sequence[Any], key: jax.Array) -> Trajectories:
    """Phase 1: ``strategy.collect`` (a :class:`jaxrl_reason.rollout.RolloutStrategy`), with
    the result's shapes checked against the contract."""
    return strategy.collect(policy, examples, key).check()


def outcome_token_rewards(
    rewards: np.ndarray, lengths: np.ndarray, width: int, loss_mask: np.ndarray | None = None
) -> np.ndarray:
    """Places each sequence's scalar reward on its last response token (verl's layout).

    ``rewards float[B]``, ``lengths int[B]`` -> ``float32[B, width]``; empty responses get
    nothing (their mask is empty anyway). With ``loss_mask``, the reward goes on each row's
    last *policy* token instead (the same token unless a multi-turn episode ends with an
    observation), so estimators that sum rewards over the loss mask see it.
    """
    out = np.zeros((len(rewards), width), np.float32)
    last = np.asarray(lengths) - 1
    if loss_mask is not None:
        m = np.asarray(loss_mask) > 0
        has = m.any(-1)
        last = np.where(has, width - 1 - np.argmax(m[:, ::-1], -1), last)
    rows = np.nonzero(last >= 0)[0]
    out[rows, last[rows]] = np.asarray(rewards, np.float32)[rows]
    return out


@dataclasses.dataclass
class Scorer:
    """What the score phase needs (built once by the trainer).

    Attributes:
      tokenizer: decodes responses.
      task: verifies them (``task.verify_batch``) and, for oracle steps, labels their steps.
      weights: ``config.reward.weights`` (``{component: weight}``; 0 = off).
      settings: ``{"overlong_buffer", "length_coef", "explore": {...}}`` for components.
      also: components run at weight 0 for the fields they fill (``reward.step_scorer``).
      placement: per-component placement overrides (``explore.placement``).
      max_len: the sampler's ``max_new_tokens``; ``max_steps``: ``S``.
      state: run state kept across steps (the exploration answer history).
      self_certainty_fn: ``Trajectories -> float32[B]``, called only when a component needs it.
      judge_fn: ``prompts -> N judgement texts each`` for the ``judge`` component (CAPO).
    """

    tokenizer: Any
    task: Any
    weights: Mapping[str, float]
    settings: Mapping[str, Any]
    max_len: int
    max_steps: int = 8
    also: Sequence[str] = ()
    placement: Mapping[str, str] = dataclasses.field(default_factory=dict)
    state: dict[str, Any] = dataclasses.field(default_factory=dict)
    self_certainty_fn: Callable[[Trajectories], np.ndarray] | None = None
    judge_fn: Callable[[Sequence[str]], list[list[str]]] | None = None


@dataclasses.dataclass
class Scored:
    """Host-side results of the score phase (for metrics and samples).

    ``texts``: decoded responses; ``examples``: each row's example; ``correct``: the
    verifier's outcome ``float32[B]``; ``keys``: canonical final answers; ``bonus``: the
    advantage bonus ``float32[B]``; ``components``: every computed component.
    """

    texts: list[str]
    examples: list[Any]
    correct: np.ndarray
    keys: list[str]
    bonus: np.ndarray
    components: dict[str, np.ndarray]


def score(
    traj: Trajectories,
    examples: Sequence[Any],
    scorer: Scorer,
    *,
    answers: Sequence[str] | None = None,
) -> tuple[Trajectories, Scored]:
    """Phase 2: verifies every response and computes the configured reward components.

    ``answers`` (one text per row): what the verifier reads instead of the decoded response,
    e.g. the final answers of environment episodes (``EnvStrategy.last_answers``), whose
    transcripts hold observations; the components still see the whole response text.

    Fills ``reward`` (float32[B]), ``token_rewards`` (the reward on each row's last
    response token) and whatever the components supply (``step_scores`` ...); on a forest,
    ``leaf_reward`` (the reward of each leaf's row).
    """
    from jaxrl_reason.rewards.canonical import canonical_keys
    from jaxrl_reason.rewards.extract import extract_answer
    from jaxrl_reason.rewards.registry import RewardContext, compute_rewards, get_reward
    from jaxrl_reason.rollout.chat import decode_responses

    lengths = np.asarray(traj.lengths)
    texts = decode_responses(scorer.tokenizer, np.asarray(traj.tokens), lengths)
    row_examples = [examples[int(g)] for g in np.asarray(traj.group_id)]
    verified = texts if answers is None else [str(a) for a in answers]
    if len(verified) != len(texts):
        raise ValueError(f"score: {len(verified)} answers for {len(texts)} rows")
    correct = np.asarray(scorer.task.verify_batch(verified, row_examples), np.float32)
    keys = canonical_keys([extract_answer(t)[0] for t in verified])
    wanted = [n for n, w in scorer.weights.items() if w] + list(scorer.also)
    sc = None
    if any("self_certainty" in get_reward(n).needs for n in wanted):
        if scorer.self_certainty_fn is None:
            raise ValueError("a reward component needs self-certainty but no forward was given")
        sc = np.asarray(scorer.self_certainty_fn(traj), np.float32)
    ctx = RewardContext(
        responses=texts,
        examples=row_examples,
        lengths=lengths,
        group_ids=np.asarray(traj.group_id),
        max_len=int(scorer.max_len),
        correct=correct,
        keys=keys,
        task=scorer.task,
        max_steps=int(scorer.max_steps),
        config=scorer.settings,
        state=scorer.state,
        self_certainty=sc,
        trajectories=traj,
        tokenizer=scorer.tokenizer,
        judge_fn=scorer.judge_fn,
    )
    out = compute_rewards(scorer.weights, ctx, also=scorer.also, placement=scorer.placement)
    fields = dict(out.fields)
    fields["reward"] = out.total
    fields["token_rewards"] = outcome_token_rewards(
        out.total, lengths, traj.response_width, np.asarray(traj.loss_mask)
    )
    leaf_row = fields.pop("leaf_row", None)
    leaf_row = traj.leaf_row if traj.leaf_row is not None else leaf_row
    if traj.is_leaf is not None and traj.leaf_reward is None and leaf_row is not None:
        rows = np.asarray(leaf_row)
        fields["leaf_reward"] = np.where(rows >= 0, out.total[np.maximum(rows, 0)], 0.0)
    traj = traj.replace(**fields)
    return traj, Scored(texts, row_examples, correct, keys, out.bonus, out.components)


def prof_filter(traj: Trajectories, correct: np.ndarray, settings: Any) -> tuple[Trajectories, int]:
    """PROF (Ye et al. 2025, arXiv 2509.03403) between the score and credit phases: the rows
    :func:`jaxrl_reason.credit.prof_keep` drops get an all-zero ``loss_mask``, so every
    estimator treats them as padding (no group membership, zero advantage) and the loss
    ignores them.

    Args:
      traj: scored trajectories with ``step_scores`` (a step scorer ran).
      correct: ``float32[B]`` the verifier's outcomes.
      settings: ``config.prof`` (``n_remove``, ``len_coef``).

    Returns: ``(traj, number of dropped rows)``.
    """
    if traj.step_scores is None:
        raise ValueError("prof.n_remove > 0 needs step_scores: set reward.step_scorer")
    from jaxrl_reason.credit.process import prof_keep

    seg = np.asarray(traj.segment_id)
    s = np.asarray(traj.step_scores).shape[1]
    valid = (seg[:, None, :] == np.arange(s)[None, :, None]).any(-1)
    keep = prof_keep(
        np.asarray(traj.step_scores),
        valid,
        np.asarray(correct),
        np.asarray(traj.group_id),
        n_remove=int(settings.get("n_remove", 0)),
        len_coef=float(settings.get("len_coef", 0.0)),
    )
    mask = np.asarray(traj.loss_mask, np.float32) * keep[:, None]
    return traj.replace(loss_mask=mask.astype(np.float32)), int((~keep).sum())


class CreditFn:
    """The credit phase's estimator call (built by :func:`make_credit_fn`).

    ``fn(traj) -> (advantages, returns)`` (float32 ``[B, R]``, zero off ``loss_mask``), and
    ``fn.update_mask(traj)``: the mask the update trains on when the estimator registered a
    loss-mask transform (``credit.loss_mask_fn``; spo_chain's ``p < rho``), float32
    ``[B, R]``, else None.
    """

    def __init__(self, name: str, kwargs: Mapping[str, Any] | None = None):
        from jaxrl_reason.rollout.trajectories import FIELD_SOURCES

        self.name = name
        self._sources = FIELD_SOURCES
        est = credit.get(name)
        self.required = credit.inputs(name)
        self.optional = credit.optional_inputs(name)
        static_kw = dict(kwargs or {})
        mask_fn = credit.loss_mask_fn(name)

        @jax.jit
        def run(token_rewards, loss_mask, group_id, fields):
            adv, ret = est(token_rewards, loss_mask, group_id, **fields, **static_kw)
            m = loss_mask.astype(jnp.float32)
            return adv.astype(jnp.float32) * m, ret.astype(jnp.float32) * m

        self._run = run
        self._mask = None
        if mask_fn is not None:

            @jax.jit
            def mask(loss_mask, fields):
                keep = mask_fn(loss_mask > 0, **fields, **static_kw)
                return (keep & (loss_mask > 0)).astype(jnp.float32)

            self._mask = mask

    def _fields(self, traj: Trajectories) -> dict[str, Any]:
        fields = {}
        for arg, field in self.required.items():
            v = getattr(traj, field)
            if v is None:
                raise ValueError(
                    f"estimator {self.name!r} needs Trajectories.{field}, which is not set; it "
                    f"is filled by {self._sources.get(field, 'a rollout strategy')}"
                )
            fields[arg] = v
        for arg, field in self.optional.items():
            if getattr(traj, field) is not None:
                fields[arg] = getattr(traj, field)
        return fields

    def __call__(self, traj: Trajectories):
        return self._run(traj.token_rewards, traj.loss_mask, traj.group_id, self._fields(traj))

    def update_mask(self, traj: Trajectories) -> np.ndarray | None:
        """float32 ``[B, R]`` tokens the update trains on, or None (= ``loss_mask``)."""
        if self._mask is None:
            return None
        return np.asarray(self._mask(jnp.asarray(traj.loss_mask), self._fields(traj)))


def make_credit_fn(name: str, kwargs: Mapping[str, Any] | None = None) -> CreditFn:
    """A :class:`CreditFn`: jitted ``fn(traj) -> (advantages, returns)`` for estimator
    ``name``.

    Reads ``token_rewards``, ``loss_mask``, ``group_id`` and the fields the estimator
    declares (``credit.inputs(name)``; ``credit.optional_inputs(name)`` when set), so every
    registered estimator runs on any ``Trajectories`` that carries its inputs.

    Raises (when called):
      ValueError: a declared input is ``None`` (names the field and who fills it).
    """
    return CreditFn(name, kwargs)


def assign_credit(
    credit_fn: Callable, traj: Trajectories, bonus: np.ndarray | None = None
) -> Trajectories:
    """Phase 3: advantages and returns from ``credit_fn`` (:func:`make_credit_fn`), plus the
    advantage bonus of the advantage-placed reward components on every loss-mask token:
    ``A[i, t] = Ahat[i, t] + bonus[i] * m[i, t]`` (Song, Kempe & Munos 2025, arXiv
    2509.06941: ``A_final = Ahat + c * b``, the bonus after the group normalisation).
    When the estimator narrows the loss mask (``credit_fn.update_mask``, SPO's ``p < rho``)
    the result is ``update_mask`` (float32 ``[B, R]``), and ``m`` is that mask.
    """
    adv, ret = credit_fn(traj)
    adv = np.asarray(adv)
    mask_fn = getattr(credit_fn, "update_mask", None)
    um = mask_fn(traj) if mask_fn is not None else None
    m = np.asarray(traj.loss_mask) if um is None else um
    if bonus is not None and np.any(bonus):
        adv = adv + np.asarray(bonus, np.float32)[:, None] * m
    return traj.replace(
        advantages=(adv * (m > 0)).astype(np.float32), returns=np.asarray(ret), update_mask=um
    )


def update_batch(
    traj: Trajectories, idx: np.ndarray, *, sft_rows: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Rows ``idx`` of ``traj`` in the layout of :func:`jaxrl_reason.train.step.rl_loss`
    (``prompt_tokens``, ``prompt_mask``, ``response``, ``response_mask``, ``old_logprobs``,
    ``advantages``, ``returns`` and, when set, ``ref_logprobs`` and ``old_values``).
    ``response_mask`` is ``update_mask`` when the credit phase set one (SPO's ``p < rho``:
    every loss term is masked by it, so the other tokens get exactly zero gradient), else
    ``loss_mask``.

    ``sft_rows`` (``float32[B]`` over all of ``traj``'s rows, e.g. the verifier's ``correct``)
    adds ``sft_mask = response_mask * (sft_rows[idx] > 0)`` (float32 ``[len(idx), R]``), the
    tokens of the auxiliary NLL term (``algo.sft_coef``)."""
    r = traj.rows(idx)
    mask = r["update_mask"] if "update_mask" in r else r["loss_mask"]
    batch = {
        "prompt_tokens": r["prompt_tokens"].astype(np.int32),
        "prompt_mask": r["prompt_mask"].astype(bool),
        "response": r["tokens"].astype(np.int32),
        "response_mask": mask.astype(np.float32),
        "old_logprobs": r["old_logprobs"].astype(np.float32),
        "advantages": r["advantages"].astype(np.float32),
        "returns": r["returns"].astype(np.float32),
    }
    if "ref_logprobs" in r:
        batch["ref_logprobs"] = r["ref_logprobs"].astype(np.float32)
    if "values" in r:
        batch["old_values"] = r["values"].astype(np.float32)
    if sft_rows is not None:
        keep = (np.asarray(sft_rows)[idx] > 0).astype(np.float32)
        batch["sft_mask"] = batch["response_mask"] * keep[:, None]
    return batch


# --------------------------------------------------------------------------------------------
# DAPO dynamic sampling (Yu et al. 2025, arXiv 2503.14476).

#: Trajectories fields indexed by the node axis (tree rollouts), which a row selection
#: cannot carry; dynamic sampling is validated to run on row-only strategies.
_NODE_FIELDS = ("parent", "is_leaf", "node_valid", "leaf_reward", "leaf_row")


def informative_groups(values: np.ndarray, group_ids: np.ndarray, num_groups: int) -> np.ndarray:
    """DAPO's filter: ``keep[g] = std_{rows of g}(values) > 0`` (or the group has one row).

    ``values float[B]`` (the verifier's accuracy, DAPO's default metric ``acc``, or the total
    reward), ``group_ids int[B]`` in ``[0, num_groups)`` -> ``bool[num_groups]``. An all-0 or
    all-1 group has zero GRPO advantage everywhere: it carries no gradient, only dilutes a
    token-mean loss. Worked example (G = 4): accs ``[1111] [0100] [0000] [1011]`` -> keep
    ``[F, T, F, T]``.
    """
    v = np.asarray(values, np.float64)
    g = np.asarray(group_ids)
    keep = np.zeros(num_groups, bool)
    for j in range(num_groups):
        x = v[g == j]
        keep[j] = len(x) == 1 or float(np.std(x)) > 0.0
    return keep


def select_groups(
    parts: Sequence[tuple[Trajectories, Scored]],
    picks: Sequence[tuple[int, int]],
    *,
    masked: Sequence[bool] | None = None,
) -> tuple[Trajectories, Scored]:
    """Rows of whole groups from several scored batches, as one batch.

    Args:
      parts: ``(traj, scored)`` of each sampling round (host arrays; the same response width
        ``R``; prompt widths may differ: they are left-padded to the widest).
      picks: ``(part, group)`` in output order; output group ``i`` gets ``group_id = i``.
      masked: per pick, True to zero the group's ``loss_mask`` (filler rows that keep the
        batch shape but carry no loss, when dynamic sampling ran out of rounds).

    Returns:
      ``(traj, scored)`` with every per-row field gathered (``group_id`` renumbered).
    """
    masked = [False] * len(picks) if masked is None else list(masked)
    width = max(int(np.asarray(t.prompt_tokens).shape[1]) for t, _ in parts)
    rows_of = []
    for p, g in picks:
        gid = np.asarray(parts[p][0].group_id)
        rows_of.append(np.nonzero(gid == g)[0])
    fields: dict[str, list[np.ndarray]] = {}
    texts, exs, correct, keys, bonus = [], [], [], [], []
    comps: dict[str, list[np.ndarray]] = {}
    for i, ((p, _), rows) in enumerate(zip(picks, rows_of, strict=True)):
        traj, sc = parts[p]
        for f in dataclasses.fields(traj):
            v = getattr(traj, f.name)
            if v is None or f.name in _NODE_FIELDS:
                continue
            v = np.asarray(v)[rows]
            if f.name in ("prompt_tokens", "prompt_mask") and v.shape[1] < width:
                pad = np.zeros((v.shape[0], width - v.shape[1]), v.dtype)
                v = np.concatenate([pad, v], axis=1)
            if f.name == "group_id":
                v = np.full_like(v, i)
            if f.name == "loss_mask" and masked[i]:
                v = np.zeros_like(v)
            fields.setdefault(f.name, []).append(v)
        texts += [sc.texts[r] for r in rows]
        exs += [sc.examples[r] for r in rows]
        keys += [sc.keys[r] for r in rows]
        correct.append(np.asarray(sc.correct)[rows])
        bonus.append(np.asarray(sc.bonus)[rows])
        for name, v in sc.components.items():
            comps.setdefault(name, []).append(np.asarray(v)[rows])
    base = parts[0][0]
    out = base.replace(**{k: np.concatenate(v, axis=0) for k, v in fields.items()})
    scored = Scored(
        texts,
        exs,
        np.concatenate(correct),
        keys,
        np.concatenate(bonus),
        {k: np.concatenate(v) for k, v in comps.items()},
    )
    return out, scored
