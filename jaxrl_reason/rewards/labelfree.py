"""Label-free rewards: self-certainty, answer confidence, semantic clusters, majority vote, format.

Each reward needs no gold answer. Formulas, sources and worked examples:
``docs/exploration.md``.

* Self-certainty (INTUITOR, Zhao et al. arXiv 2505.19590): ``mean_t KL(U || p_t)``.
* Answer confidence (CRew, Du et al. arXiv 2510.13501): mean probability of the answer tokens.
* Semantic-cluster frequency (EMPO, Zhang et al. arXiv 2504.05812): ``|c(i)| / G``.
* Majority-vote pseudo-labels (TTRL, Zuo et al. arXiv 2504.16084).
* Format + length surrogate (Xin et al. arXiv 2505.19439).

Array conventions: ``[B, T]`` per-token arrays with a ``mask [B, T]``; ``group_ids int32[B]``
in ``[0, B)``; ``answer_ids int32[B]`` canonical answer ids (equal id = same answer; see
:func:`jaxrl_reason.rewards.canonical.keys_to_ids`). Everything here is jit-able.
"""

from __future__ import annotations

import math
from typing import Literal

import jax
import jax.numpy as jnp

Array = jax.Array

__all__ = [
    "answer_confidence",
    "empo_rewards",
    "format_length_reward",
    "length_reward",
    "per_token_self_certainty",
    "self_certainty_from_logits",
    "self_certainty_reward",
    "ttrl_rewards",
]


def _masked_mean(x: Array, mask: Array) -> Array:
    m = jnp.asarray(mask, bool)
    n = jnp.sum(m, axis=-1).astype(jnp.float32)
    s = jnp.sum(jnp.where(m, jnp.asarray(x, jnp.float32), 0.0), axis=-1)
    return s / jnp.maximum(n, 1.0)


# --------------------------------------------------------------------------- self-certainty


def per_token_self_certainty(logits: Array, *, temperature: float = 1.0) -> Array:
    """Plain-jnp reference of the per-token self-certainty ``KL(U || p_t)``.

    ``KL(U || p) = -(1/|V|) sum_j log(|V| p_j) = logsumexp(z) - mean_j(z) - log|V|`` with
    ``z = logits / temperature`` (INTUITOR eq. for SC). The official code drops the constant
    ``log|V|`` (``lse - mean``), which group normalisation removes anyway; we keep the true
    KL so that the value is 0 for a uniform distribution.

    Args:
      logits: ``float[..., V]``; computed in float32.
      temperature: verl-INTUITOR divides by the rollout temperature; open-r1 uses 1.

    Returns:
      ``float32[...]`` (``>= 0``).
    """
    z = jnp.asarray(logits, jnp.float32) / jnp.float32(temperature)
    v = z.shape[-1]
    return jax.nn.logsumexp(z, axis=-1) - jnp.mean(z, axis=-1) - jnp.float32(math.log(v))


def self_certainty_reward(per_token: Array, mask: Array) -> Array:
    """Per-response self-certainty: masked mean of per-token values over response tokens.

    This is the reduction of the token log-prob kernel's per-token ``KL(U || p)`` output.
    Shapes: ``per_token float[B, T]``, ``mask [B, T]``; returns ``float32[B]`` (0 for an
    empty response).
    """
    return _masked_mean(per_token, mask)


def self_certainty_from_logits(logits: Array, mask: Array, *, temperature: float = 1.0) -> Array:
    """Reference ``SC(o | q) = (1/|o|) sum_t KL(U || p(. | q, o_<t))`` from full logits.

    Materialises ``[B, T, V]``: for tests and small models; training uses the kernel's
    per-token output and :func:`self_certainty_reward`.

    Shapes: ``logits float[B, T, V]``, ``mask [B, T]``; returns ``float32[B]``.
    """
    return self_certainty_reward(per_token_self_certainty(logits, temperature=temperature), mask)


# --------------------------------------------------------------------------- CRew


def answer_confidence(logprobs: Array, answer_mask: Array) -> Array:
    """CRew: arithmetic mean of the answer tokens' probabilities ``exp(log pi(s_t))``.

    ``CRew(s) = (1/|T_ans|) sum_{t in T_ans} pi(s_t | q, s_<t)`` (Du et al. 2025, sec. 3.1).
    Not the geometric mean, not the joint probability. ``answer_mask`` should cover the
    tokens strictly inside ``\\boxed{...}`` (the paper leaves the brace tokens open).

    Shapes: ``logprobs float[B, T]`` (generated tokens' log-probs), ``answer_mask [B, T]``.
    Returns ``float32[B]``; 0 for a response with no answer token.
    """
    return _masked_mean(jnp.exp(jnp.asarray(logprobs, jnp.float32)), answer_mask)


# --------------------------------------------------------------------------- groups


def _pairwise(answer_ids: Array, group_ids: Array):
    a = jnp.asarray(answer_ids, jnp.int32)
    g = jnp.asarray(group_ids, jnp.int32)
    same_group = g[:, None] == g[None, :]
    return a, g, same_group, same_group & (a[:, None] == a[None, :])


def empo_rewards(
    answer_ids: Array,
    group_ids: Array,
    valid: Array | None = None,
    *,
    rule: Literal["trl", "verl"] = "trl",
    entropy_filter: bool | None = None,
    delta_low: float | None = None,
    delta_high: float | None = None,
) -> tuple[Array, Array, Array]:
    """EMPO semantic-cluster reward ``r_i = |c(i)| / G`` and the entropy prompt filter.

    Clusters are canonical answers (equal ``answer_ids``): with keys from
    :func:`~jaxrl_reason.rewards.canonical.canonical_key`, key equality *is* verifier
    equivalence, so EMPO's greedy pairwise clustering reduces to grouping by id.
    Semantic entropy ``H = -sum_c p_c log p_c`` (natural log), ``p_c = |c| / G``.

    Rules for samples without an answer (``valid == False``), following the two official
    implementations:

    * ``"trl"`` (default): invalid samples share one cluster (as the shared "no answer" key
      does) that counts in ``p`` and ``H`` but earns reward 0; rewards are zeroed for groups
      failing the filter, which by default is the code's ``H < log G`` (only an all-distinct
      group fails).
    * ``"verl"``: each invalid sample is its own singleton cluster with reward ``1 / G``; no
      filter by default.

    ``entropy_filter`` (default: on for ``"trl"``, off for ``"verl"``) keeps a group when
    ``delta_low < H < delta_high`` (paper eq. 7; defaults ``-inf`` and ``log G``, the paper's
    values are unknown).

    Args:
      answer_ids: ``int32[B]``; group_ids: ``int32[B]``; valid: ``bool[B]`` (default all).

    Returns:
      ``(rewards float32[B], entropy float32[B] (of the sample's group), keep bool[B])``.
    """
    if rule not in ("trl", "verl"):
        raise ValueError(f"rule={rule!r}: use 'trl' or 'verl'")
    a, g, same_group, same = _pairwise(answer_ids, group_ids)
    v = jnp.ones(a.shape, bool) if valid is None else jnp.asarray(valid, bool)
    if rule == "verl":  # an invalid sample clusters with itself only
        eye = jnp.eye(a.shape[0], dtype=bool)
        same = same & ((v[:, None] & v[None, :]) | eye)
    else:  # invalid samples form one shared cluster, whatever their ids
        shared = ~v[:, None] & ~v[None, :] & same_group
        same = (same & (v[:, None] == v[None, :])) | shared
    size = jnp.sum(same_group, axis=-1).astype(jnp.float32)
    p = jnp.sum(same, axis=-1).astype(jnp.float32) / size
    # sum over clusters p_c log p_c = sum over samples (1/G) log p_{c(i)}
    ent = -jnp.sum(jnp.where(same_group, jnp.log(p)[None, :], 0.0), axis=-1) / size
    r = p if rule == "verl" else jnp.where(v, p, 0.0)
    use_filter = (rule == "trl") if entropy_filter is None else entropy_filter
    if use_filter:
        hi = jnp.log(size) if delta_high is None else jnp.float32(delta_high)
        lo = -jnp.inf if delta_low is None else jnp.float32(delta_low)
        keep = (ent > lo) & (ent < hi)
    else:
        keep = jnp.ones(a.shape, bool)
    return jnp.where(keep, r, 0.0), ent, keep


def ttrl_rewards(
    answer_ids: Array,
    group_ids: Array,
    valid: Array | None = None,
    *,
    n_train: int | None = None,
) -> tuple[Array, Array, Array]:
    """TTRL majority-vote pseudo-label rewards ``r_i = 1{a_i == mode(a_1..a_N_vote)}``.

    All samples of a group vote (``N_vote`` = group size; the TTRL AIME script uses 64);
    the mode is ``Counter.most_common(1)``: the most frequent answer, ties going to the
    answer seen first in sample order. Samples without an answer vote too (TTRL's ``""``);
    if such an answer wins, the group has no pseudo-label and every reward is 0 (our choice:
    TTRL's grader would compare against an empty label). Only the first ``n_train`` samples
    of each group (in sample order) are trained on (TTRL: 32 of 64).

    Args:
      answer_ids: ``int32[B]`` canonical answer ids (equal id = equivalent answers).
      group_ids: ``int32[B]``.
      valid: ``bool[B]``, False where a sample has no answer (default all True).
      n_train: samples per group to train on (default: all).

    Returns:
      ``(rewards float32[B], train_mask bool[B], majority bool[B])``; ``majority`` marks the
      samples holding the voted answer.
    """
    a, g, same_group, same = _pairwise(answer_ids, group_ids)
    b = a.shape[0]
    v = jnp.ones((b,), bool) if valid is None else jnp.asarray(valid, bool)
    idx = jnp.arange(b)
    count = jnp.sum(same, axis=-1)
    first = jnp.min(jnp.where(same, idx[None, :], b), axis=-1)
    # most votes first, then the earliest first appearance: score unique per answer.
    score = count * (b + 1) - first
    best = jnp.max(jnp.where(same_group, score[None, :], -1), axis=-1)
    majority = score == best
    label_ok = jnp.any(same_group & majority[None, :] & v[None, :], axis=-1)
    rewards = jnp.where(majority & label_ok, 1.0, 0.0).astype(jnp.float32)
    rank = jnp.sum(same_group & (idx[None, :] < idx[:, None]), axis=-1)
    train = jnp.ones((b,), bool) if n_train is None else rank < n_train
    return rewards, train, majority


# --------------------------------------------------------------------------- format + length


def length_reward(
    x: Array,
    *,
    turning_point: float = 0.5,
    shape: Literal["quadratic", "polyline"] = "quadratic",
) -> Array:
    """Length surrogate ``R_l(x)`` of Xin et al. (eqs. 2 and 4), ``x = L / L_max``.

    ``"quadratic"``: ``1 - (1 - x/p)^2`` on ``[0, p]``, ``1 - 2 ((x - p)/(1 - p))^2`` on
    ``(p, 1]``: 0 at 0, peak 1 at ``p``, -1 at 1. ``"polyline"`` (the paper's ablation, stated
    for ``p = 0.5``, generalised here): ``x / p`` up to ``p``, then linear down to -1 at 1.
    ``x`` is clipped to ``[0, 1]``. Returns float32 of ``x``'s shape.
    """
    if not 0.0 < turning_point < 1.0:
        raise ValueError(f"turning_point={turning_point}: must lie in (0, 1); the paper uses 0.5")
    p = jnp.float32(turning_point)
    x = jnp.clip(jnp.asarray(x, jnp.float32), 0.0, 1.0)
    if shape == "quadratic":
        up = 1.0 - jnp.square(1.0 - x / p)
        down = 1.0 - 2.0 * jnp.square((x - p) / (1.0 - p))
    elif shape == "polyline":
        up = x / p
        down = 1.0 - 2.0 * (x - p) / (1.0 - p)
    else:
        raise ValueError(f"shape={shape!r}: use 'quadratic' or 'polyline'")
    return jnp.where(x <= p, up, down)


def format_length_reward(
    lengths: Array,
    format_score: Array,
    *,
    max_length: float = 3072.0,
    turning_point: float = 0.5,
    shape: Literal["quadratic", "polyline"] = "quadratic",
) -> Array:
    """Format + length surrogate reward ``R_fl`` (Xin et al., eq. 5).

    ``R_fl = R_f + R_l`` when the format is right (``format_score > 0``), else
    ``min(0, R_l)``: a badly formatted response never gains from length but still pays for
    running long.

    Args:
      lengths: ``[B]`` response lengths ``L`` in tokens.
      format_score: ``[B]`` ``R_f``: bool / {0, 1} (paper), or the code's
        ``0.5 * (think_tags + answer_ok)`` in ``{0, 0.5, 1}``.
      max_length: ``L_max`` (the code's ``max_response_length`` 3072).
      turning_point: ``p`` (0.5; 0.8 was marginally better in the ablation).

    Returns:
      ``float32[B]``.
    """
    rl = length_reward(
        jnp.asarray(lengths, jnp.float32) / jnp.float32(max_length),
        turning_point=turning_point,
        shape=shape,
    )
    rf = jnp.asarray(format_score, jnp.float32)
    return jnp.where(rf > 0, rf + rl, jnp.minimum(0.0, rl))
