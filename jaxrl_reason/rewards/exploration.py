"""Outcome-based exploration: UCB bonuses over final answers and the batch repetition penalty.

Song, Kempe, Munos, "Outcome-based Exploration for LLM Reasoning" (arXiv 2509.06941). The
formulas come from secondary copies of the paper (see ``docs/exploration.md`` and
the project's research notes on exploration); no official code exists.

For question ``x`` with ``G`` samples, canonical answers ``a_i`` and GRPO advantages
``Ahat_i``::

    b_ucb(x, a)   = min(1, sqrt(1 / N(x, a)))                      (historical, "UCB")
    ucb_mean      = b_ucb - mean_j b_ucb_j        (plain)  or  b_i - mean_{j != i} b_j  (loo)
    ucb_con       = b_ucb - b0                                      (constant baseline)
    b_batch_i     = -(#{j : a_j == a_i} - 1) / G                    (within-batch, "Batch")
    A[i, t]       = Ahat_i + c * m[i, t] * bonus_i                  (added after normalisation)

``N(x, a)`` counts how often answer ``a`` was sampled for ``x`` over training. Whether it
includes the current batch is not stated by the paper; :class:`AnswerHistory` returns either
(``include_current=True``, the default, gives ``N >= 1``; without it an unseen answer has
``N = 0`` and ``min(1, sqrt(1/0)) = 1``).

Split: the per-prompt answer table is host state (Python, strings); every bonus is a pure,
jit-able array function of counts / ids. ``group_ids`` in ``[0, B)`` name the prompt group
of each of the ``B`` samples (the sampler's contract: row ``b * n + j`` has group ``b``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable, Sequence
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_reason.rewards.canonical import NONE_KEY

Array = jax.Array
Variant = Literal["ucb", "ucb_mean", "ucb_con"]
VARIANTS: tuple[str, ...] = ("ucb", "ucb_mean", "ucb_con")

__all__ = [
    "NONE_KEY",
    "AnswerHistory",
    "ExplorationConfig",
    "VARIANTS",
    "all_correct_groups",
    "apply_exploration_bonus",
    "batch_repetition_penalty",
    "bonus_token_mask",
    "exploration_bonus",
    "group_mean",
    "ucb_bonus",
]


# --------------------------------------------------------------------------- array functions


def _num_groups(group_ids: Array, num_groups: int | None) -> int:
    # segment ops need a static size; B groups always suffice because ids lie in [0, B).
    return int(group_ids.shape[0]) if num_groups is None else int(num_groups)


def group_mean(x: Array, group_ids: Array, *, num_groups: int | None = None) -> Array:
    """Mean of ``x`` over each sample's group, broadcast back to samples.

    Shapes: ``x float[B]``, ``group_ids int32[B]`` in ``[0, num_groups)`` (default ``B``).
    Returns ``float32[B]``.
    """
    x = jnp.asarray(x, jnp.float32)
    g = jnp.asarray(group_ids, jnp.int32)
    k = _num_groups(g, num_groups)
    s = jax.ops.segment_sum(x, g, num_segments=k)
    n = jax.ops.segment_sum(jnp.ones_like(x), g, num_segments=k)
    return (s / jnp.maximum(n, 1.0))[g]


def _group_size(group_ids: Array, num_groups: int | None) -> Array:
    g = jnp.asarray(group_ids, jnp.int32)
    k = _num_groups(g, num_groups)
    return jax.ops.segment_sum(jnp.ones(g.shape, jnp.float32), g, num_segments=k)[g]


def ucb_bonus(
    counts: Array,
    *,
    variant: Variant = "ucb",
    b0: float = 0.5,
    group_ids: Array | None = None,
    baseline: Literal["plain", "loo"] = "plain",
    num_groups: int | None = None,
) -> Array:
    """Historical UCB exploration bonus per sample (Song et al. 2025, "UCB", "-Mean", "-Con").

    ``b_i = min(1, sqrt(1 / N_i))`` with ``N_i = N(x_i, a_i)``, then

    * ``"ucb"``: ``b_i`` (always in ``(0, 1]``);
    * ``"ucb_mean"``: ``b_i - mean_{j in group(i)} b_j`` (``baseline="plain"``) or the
      leave-one-out ``b_i - mean_{j in group(i), j != i} b_j`` (``baseline="loo"``, equal to
      ``G / (G - 1)`` times the plain one; 0 for a group of one). The sources disagree on
      which mean the paper uses; ``"plain"`` is the default;
    * ``"ucb_con"``: ``b_i - b0``. ``b0 = 0.5`` (the paper's DAPO "medium" setting, default)
      penalises answers seen more than 4 times; ``b0 = 1`` (its MATH "easy" setting) is a
      pure repetition penalty, 0 only for ``N = 1``.

    Args:
      counts: ``int/float[B]`` per-sample ``N(x_i, a_i)``. With counts that include the
        current batch, ``N >= 1``; ``N = 0`` (counts before the batch, unseen answer) gives
        ``b = 1`` (``sqrt(1/0) = inf`` capped at 1).
      variant: ``"ucb" | "ucb_mean" | "ucb_con"``.
      b0: constant baseline of ``"ucb_con"``.
      group_ids: ``int32[B]`` in ``[0, B)``; required by ``"ucb_mean"``.
      baseline: ``"plain" | "loo"`` for ``"ucb_mean"``.
      num_groups: static number of groups (default ``B``).

    Returns:
      ``float32[B]`` bonus, before the coefficient ``c``. jit-able (strings static).
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant={variant!r}: use one of {VARIANTS}")
    counts = jnp.asarray(counts, jnp.float32)
    # N = 0 -> 1 (the min(1, .) cap of +inf); N >= 1 -> 1/sqrt(N) which is already <= 1.
    b = jnp.where(counts > 0, jax.lax.rsqrt(jnp.maximum(counts, 1.0)), 1.0)
    b = jnp.minimum(b, 1.0)
    if variant == "ucb":
        return b
    if variant == "ucb_con":
        return b - jnp.float32(b0)
    if group_ids is None:
        raise ValueError("variant='ucb_mean' needs group_ids int32[B] (the prompt of each sample)")
    if baseline not in ("plain", "loo"):
        raise ValueError(f"baseline={baseline!r}: use 'plain' or 'loo'")
    centred = b - group_mean(b, group_ids, num_groups=num_groups)
    if baseline == "plain":
        return centred
    g = _group_size(group_ids, num_groups)
    # b_i - (sum b - b_i)/(G-1) = G/(G-1) (b_i - mean b); a lone sample has no baseline: 0.
    return jnp.where(g > 1, centred * g / jnp.maximum(g - 1.0, 1.0), 0.0)


def batch_repetition_penalty(
    answer_ids: Array, group_ids: Array, *, valid: Array | None = None
) -> Array:
    """Within-batch exploration bonus ``b_i = -(#{j in group(i) : a_j == a_i} - 1) / G``.

    Song et al. 2025, "Batch" (OBE-Batch). ``G`` is the size of sample ``i``'s group. Its
    expectation is ``-((G - 1) / G) * sum_o p(o | x)^2``: a penalty on the outcome collision
    probability.

    Args:
      answer_ids: ``int32[B]`` canonical answer ids (:func:`~jaxrl_reason.rewards.canonical.
        keys_to_ids`); equal ids are the same answer. "No answer" is one shared id by default.
      group_ids: ``int32[B]`` prompt group of each sample.
      valid: optional ``bool[B]``; samples with ``False`` (e.g. padding rows) neither count
        nor receive a penalty.

    Returns:
      ``float32[B]`` in ``[-(G-1)/G, 0]``. jit-able; memory ``O(B^2)`` booleans.
    """
    a = jnp.asarray(answer_ids, jnp.int32)
    g = jnp.asarray(group_ids, jnp.int32)
    v = jnp.ones(a.shape, bool) if valid is None else jnp.asarray(valid, bool)
    same_group = (g[:, None] == g[None, :]) & v[:, None] & v[None, :]
    same = same_group & (a[:, None] == a[None, :])
    group_size = jnp.sum(same_group, axis=-1).astype(jnp.float32)
    dup = jnp.sum(same, axis=-1).astype(jnp.float32) - 1.0
    return jnp.where(v, -dup / jnp.maximum(group_size, 1.0), 0.0)


def all_correct_groups(correct: Array, group_ids: Array, *, num_groups: int | None = None):
    """``bool[B]``: True where every sample of the sample's group is correct.

    The gate reported by one secondary source: exploration is switched off in solved groups
    (all task advantages 0) so that it never penalises a group that is already right.
    """
    c = jnp.asarray(correct, jnp.float32)
    g = jnp.asarray(group_ids, jnp.int32)
    k = _num_groups(g, num_groups)
    n_wrong = jax.ops.segment_sum(1.0 - (c > 0), g, num_segments=k)
    return n_wrong[g] == 0


def bonus_token_mask(response_mask: Array, answer_mask: Array | None = None) -> Array:
    """Tokens that receive the exploration part of the advantage: ``response & ~answer``.

    Masking the final-answer tokens (the "bonus hacking" guard of one secondary source)
    lets the bonus move the reasoning, not the way the answer is written.
    Shapes ``[B, T]``; returns ``float32[B, T]``.
    """
    m = jnp.asarray(response_mask, bool)
    if answer_mask is not None:
        m = m & ~jnp.asarray(answer_mask, bool)
    return m.astype(jnp.float32)


def apply_exploration_bonus(
    advantages: Array,
    bonus: Array,
    response_mask: Array,
    *,
    coef: float = 0.2,
    answer_mask: Array | None = None,
    gate: Array | None = None,
) -> Array:
    """``A[i, t] = Ahat[i, t] + coef * m[i, t] * bonus[i] * (1 - gate[i])``, zero off-mask.

    The bonus goes *after* group normalisation (added to the advantage, not the reward).

    Args:
      advantages: ``float[B, T]`` task advantages (e.g. GRPO), zero outside the mask.
      bonus: ``float[B]`` from :func:`ucb_bonus` or :func:`batch_repetition_penalty`.
      response_mask: ``[B, T]`` tokens carrying loss.
      coef: ``c``; 0.2 in every experiment of the paper.
      answer_mask: optional ``[B, T]`` final-answer tokens, excluded from the bonus.
      gate: optional ``bool[B]``, True where the bonus is switched off (e.g.
        :func:`all_correct_groups`).

    Returns:
      ``float32[B, T]``.
    """
    b = jnp.asarray(bonus, jnp.float32)
    if gate is not None:
        b = jnp.where(jnp.asarray(gate, bool), 0.0, b)
    m = bonus_token_mask(response_mask, answer_mask)
    adv = jnp.asarray(advantages, jnp.float32) * jnp.asarray(response_mask, jnp.float32)
    return adv + coef * m * b[:, None]


# --------------------------------------------------------------------------- host state


class AnswerHistory:
    """Per-prompt counts ``N(x, a)`` of canonical answers, bounded and checkpointable.

    Prompt ids are ``int`` or ``str`` (JSON keeps both exactly); answers are canonical keys
    (:func:`~jaxrl_reason.rewards.canonical.canonical_key`). Each :meth:`observe` call is one
    training step.

    **Bounded memory.** At most ``max_answers_per_prompt`` distinct answers per prompt and,
    optionally, ``max_prompts`` prompts. When a prompt's table overflows, the answers seen
    least recently are evicted first (ties: the smaller count, then the older insertion);
    the current batch's answers go last (only a batch with more distinct answers than the
    cap loses some of its own, the smaller counts first). Overflowing prompts are
    dropped least-recently-observed first. An evicted answer that comes back restarts at the
    count of that batch, i.e. it looks new again: stale answers are forgotten, the answers the
    policy keeps producing keep their counts.

    **Checkpoints.** :meth:`state_dict` returns plain JSON values (save with
    ``orbax.checkpoint.args.JsonSave``); :meth:`from_state_dict` restores it exactly, order
    of insertion included, so bonuses after a resume equal those of an uninterrupted run.
    """

    STATE_VERSION = 1

    def __init__(self, max_answers_per_prompt: int = 64, max_prompts: int | None = None):
        if max_answers_per_prompt < 1:
            raise ValueError(
                f"max_answers_per_prompt={max_answers_per_prompt}: must be >= 1 (use at least "
                "the group size G so that one batch always fits)"
            )
        if max_prompts is not None and max_prompts < 1:
            raise ValueError(f"max_prompts={max_prompts}: must be >= 1 or None (unbounded)")
        self.max_answers_per_prompt = int(max_answers_per_prompt)
        self.max_prompts = None if max_prompts is None else int(max_prompts)
        self.step = 0
        # prompt -> {answer: [count, last_seen_step]}; dicts keep insertion order.
        self._table: dict[Hashable, dict[str, list[int]]] = {}
        self._prompt_seen: dict[Hashable, int] = {}

    # -- queries
    def __len__(self) -> int:
        return len(self._table)

    def counts(self, prompt_id: Hashable) -> dict[str, int]:
        """``{answer: N(x, answer)}`` for one prompt (a copy; empty if unseen)."""
        return {a: c for a, (c, _) in self._table.get(prompt_id, {}).items()}

    def lookup(self, prompt_ids: Sequence[Hashable], keys: Sequence[str]) -> np.ndarray:
        """``int32[B]`` counts ``N(x_i, a_i)`` as they stand (no update)."""
        self._check(prompt_ids, keys)
        return np.asarray(
            [
                self._table.get(p, {}).get(k, (0, 0))[0]
                for p, k in zip(prompt_ids, keys, strict=True)
            ],
            dtype=np.int32,
        )

    # -- updates
    def observe(
        self,
        prompt_ids: Sequence[Hashable],
        keys: Sequence[str],
        *,
        include_current: bool = True,
    ) -> np.ndarray:
        """Adds one batch of answers and returns the per-sample counts ``int32[B]``.

        Args:
          prompt_ids: ``B`` prompt ids (``int`` or ``str``), one per sample.
          keys: ``B`` canonical answer keys.
          include_current: True (default): counts after adding this batch (``N >= 1``);
            False: counts before it (``N >= 0``).
        """
        self._check(prompt_ids, keys)
        self.step += 1
        before = self.lookup(prompt_ids, keys)
        for p, k in zip(prompt_ids, keys, strict=True):
            row = self._table.setdefault(p, {})
            entry = row.setdefault(k, [0, self.step])
            entry[0] += 1
            entry[1] = self.step
            self._prompt_seen[p] = self.step
        after = self.lookup(prompt_ids, keys)
        for p in dict.fromkeys(prompt_ids):
            self._evict_answers(p)
        self._evict_prompts()
        return after if include_current else before

    def _evict_answers(self, p: Hashable) -> None:
        row = self._table[p]
        excess = len(row) - self.max_answers_per_prompt
        if excess <= 0:
            return
        order = {a: i for i, a in enumerate(row)}
        victims = sorted(row, key=lambda a: (row[a][1], row[a][0], order[a]))[:excess]
        for a in victims:
            del row[a]

    def _evict_prompts(self) -> None:
        if self.max_prompts is None or len(self._table) <= self.max_prompts:
            return
        order = {p: i for i, p in enumerate(self._table)}
        excess = len(self._table) - self.max_prompts
        for p in sorted(self._table, key=lambda q: (self._prompt_seen[q], order[q]))[:excess]:
            del self._table[p]
            del self._prompt_seen[p]

    @staticmethod
    def _check(prompt_ids, keys) -> None:
        if len(prompt_ids) != len(keys):
            raise ValueError(
                f"prompt_ids has {len(prompt_ids)} entries but keys has {len(keys)}: pass one "
                "prompt id per sample (repeat the id for each of the G samples)"
            )
        for p in prompt_ids:
            if isinstance(p, bool) or not isinstance(p, int | str):
                raise TypeError(
                    f"prompt id {p!r} ({type(p).__name__}): use int or str ids (e.g. the "
                    "dataset index) so that the history can be checkpointed as JSON"
                )
        for k in keys:
            if not isinstance(k, str):
                raise TypeError(f"answer key {k!r}: keys must be str (use canonical_key)")

    # -- checkpointing
    def state_dict(self) -> dict[str, Any]:
        """JSON-able state (ints, strs, lists): save with ``ocp.args.JsonSave``."""
        return {
            "version": self.STATE_VERSION,
            "max_answers_per_prompt": self.max_answers_per_prompt,
            "max_prompts": self.max_prompts,
            "step": self.step,
            "prompts": [
                [p, self._prompt_seen[p], [[a, c, s] for a, (c, s) in row.items()]]
                for p, row in self._table.items()
            ],
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> AnswerHistory:
        """Inverse of :meth:`state_dict` (exact: counts, recency and insertion order)."""
        version = state.get("version")
        if version != cls.STATE_VERSION:
            raise ValueError(
                f"AnswerHistory state version {version!r}; this code reads version "
                f"{cls.STATE_VERSION}"
            )
        h = cls(state["max_answers_per_prompt"], state["max_prompts"])
        h.step = int(state["step"])
        for p, seen, rows in state["prompts"]:
            h._table[p] = {str(a): [int(c), int(s)] for a, c, s in rows}
            h._prompt_seen[p] = int(seen)
        return h

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AnswerHistory) and self.state_dict() == other.state_dict()


# --------------------------------------------------------------------------- config + glue


@dataclasses.dataclass(frozen=True)
class ExplorationConfig:
    """Settings of the outcome-exploration bonus (validated at construction).

    ``variant``: ``"ucb" | "ucb_mean" | "ucb_con" | "batch"``; ``coef`` = ``c`` (0.2 in the
    paper); ``b0`` for ``ucb_con`` (0.5; the paper uses 1 on MATH); ``baseline`` for
    ``ucb_mean``; ``include_current`` whether ``N`` includes the current batch (default, not
    stated by the paper); ``gate_all_correct`` switches the bonus off in all-correct groups;
    ``exclude_answer_tokens`` keeps it off the final-answer tokens (both reported by one
    secondary source only, off by default).
    """

    variant: str = "ucb_con"
    coef: float = 0.2
    b0: float = 0.5
    baseline: str = "plain"
    include_current: bool = True
    gate_all_correct: bool = False
    exclude_answer_tokens: bool = False
    max_answers_per_prompt: int = 64

    def __post_init__(self):
        if self.variant not in (*VARIANTS, "batch"):
            raise ValueError(f"variant={self.variant!r}: use one of {(*VARIANTS, 'batch')}")
        if self.baseline not in ("plain", "loo"):
            raise ValueError(f"baseline={self.baseline!r}: use 'plain' or 'loo'")
        if self.coef < 0:
            raise ValueError(f"coef={self.coef}: the exploration coefficient c must be >= 0")

    def make_history(self) -> AnswerHistory:
        """A fresh :class:`AnswerHistory` with this config's per-prompt cap."""
        return AnswerHistory(max_answers_per_prompt=self.max_answers_per_prompt)


def exploration_bonus(
    cfg: ExplorationConfig,
    history: AnswerHistory | None,
    prompt_ids: Sequence[Hashable],
    keys: Sequence[str],
    group_ids: np.ndarray,
    correct: np.ndarray | None = None,
) -> np.ndarray:
    """Host glue: updates ``history`` and returns ``coef * bonus`` per sample, ``float32[B]``.

    Applies the gate when ``cfg.gate_all_correct`` (then ``correct bool[B]`` is needed).
    Answer-token masking happens at token level in :func:`apply_exploration_bonus`.
    """
    from jaxrl_reason.rewards.canonical import keys_to_ids

    group_ids = np.asarray(group_ids, np.int32)
    if cfg.variant == "batch":
        bonus = batch_repetition_penalty(keys_to_ids(keys), group_ids)
    else:
        if history is None:
            raise ValueError(f"variant={cfg.variant!r} needs an AnswerHistory")
        n = history.observe(prompt_ids, keys, include_current=cfg.include_current)
        bonus = ucb_bonus(
            n, variant=cfg.variant, b0=cfg.b0, group_ids=group_ids, baseline=cfg.baseline
        )
    bonus = np.asarray(bonus, np.float32) * np.float32(cfg.coef)
    if cfg.gate_all_correct:
        if correct is None:
            raise ValueError("gate_all_correct=True needs correct bool[B]")
        bonus = np.where(np.asarray(all_correct_groups(correct, group_ids)), 0.0, bonus)
    return bonus.astype(np.float32)
