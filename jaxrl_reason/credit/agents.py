"""Agent (multi-turn) credit: GiGPO anchor-state groups and IGPO information-gain turn rewards.

Layout: one row per trajectory; its turns are the segments of ``segment_id`` (turn k =
``segment_id == k``: the agent's action tokens plus the observation that follows). Observation
tokens carry ``response_mask == 0``, so they get no advantage. Per-turn inputs are ``[B, S]``
(S = padded number of turns); ``turn_mask [B, S]`` defaults to the turns that hold at least
one masked token, and must be a prefix of each row.

Registered estimators: ``gigpo``, ``igpo``. Formulas and worked examples:
``docs/algorithms.md`` (TA) sections 4 (GiGPO) and 5 (IGPO).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxrl_reason.credit import registry
from jaxrl_reason.credit._beyond import (
    dense_ids,
    group_moments,
    group_normalize,
    rev_discounted_cumsum,
)
from jaxrl_reason.credit.segments import broadcast_segments, segment_reduce

Array = jax.Array

__all__ = ["gigpo", "gigpo_step_advantages", "igpo", "igpo_turn_rewards"]


def _turn_mask(segment_id: Array, mask: Array, s: int, turn_mask: Array | None) -> Array:
    if turn_mask is not None:
        return jnp.asarray(turn_mask, bool)
    _, tm = segment_reduce(jnp.zeros(jnp.shape(mask)), segment_id, mask, s, "count")
    return tm


def _turn_rewards_from_tokens(token_rewards: Array, segment_id: Array, s: int) -> Array:
    seg = jnp.asarray(segment_id, jnp.int32)
    # Environment rewards may sit on observation tokens (loss mask 0): sum every token with a
    # turn id, not only the trained ones.
    r, _ = segment_reduce(token_rewards, seg, seg >= 0, s, "sum")
    return r


_MODES = ("mean_std_norm", "mean_norm")


def gigpo_step_advantages(
    step_rewards: Array,
    turn_mask: Array,
    group_ids: Array,
    anchor_ids: Array,
    *,
    gamma: float = 0.95,
    omega: float = 1.0,
    mode: str = "mean_std_norm",
    episode_stats: str = "trajectory",
    eps: float = 1e-6,
) -> tuple[Array, Array]:
    """GiGPO per-turn advantages ``A = A_E + omega * A_S`` (Feng et al., arXiv 2505.10978).

    Eq. numbers from the official code comments (langfengQ/verl-agent ``gigpo/core_gigpo.py``)::

      R(tau_i) = sum_t r_t^i;  A_E(tau_i) = (R(tau_i) - mean_j R(tau_j)) / F_norm     (Eq. 3)
      R_t^i = sum_{k>=t} gamma^{k-t} r_k^i                                               (Eq. 5)
      G_S(s) = {(i, t): s_t^i == s} within the episode group                             (Eq. 6)
      A_S(a_t^i) = (R_t^i - mean_{G_S} R) / F_norm(G_S)                                  (Eq. 7)
      A = A_E + omega A_S                                                                (Eq. 8)

    ``F_norm`` = unbiased std + eps (``mode="mean_std_norm"``) or 1 (``"mean_norm"``).
    ``episode_stats="trajectory"`` counts each trajectory once (Eq. 3; DrMAS code);
    ``"step"`` takes mean/std over all turn rows, weighting a trajectory by its number of turns
    (later verl-agent ``compute_mean_std_cross_steps=True``). Groups of one give 0 (the code
    gives ``A_E = R`` for a single-trajectory group; 0 at step level as here).

    Args:
      step_rewards: float ``[B, S]`` environment reward of each turn.
      turn_mask: bool ``[B, S]`` valid turns (a prefix of each row).
      group_ids: int32 ``[B]`` episode group (same task and seed).
      anchor_ids: int32 ``[B, S]`` id of the pre-action observation (hash identical
        observations to the same id on the host; ids are compared only within a group).
      gamma: 0.95 (run scripts; yaml default 1.0). omega: 1.0.

    Returns: ``(advantages [B, S], step_returns [B, S])`` float32, 0 on invalid turns.
    """
    if mode not in _MODES:
        raise ValueError(f"gigpo: mode must be one of {_MODES}, got {mode!r}")
    tm = jnp.asarray(turn_mask, bool)
    b, s = tm.shape
    r = jnp.where(tm, jnp.asarray(step_rewards, jnp.float32), 0.0)
    std = "unbiased" if mode == "mean_std_norm" else "none"
    g = jnp.asarray(group_ids, jnp.int32)
    valid_row = jnp.any(tm, -1)
    ep_ret = jnp.sum(r, -1)
    if episode_stats == "trajectory":
        ids, nb = dense_ids((g,), valid_row)
        a_e = group_normalize(ep_ret, ids, valid_row, nb, std=std, eps=eps)[:, None]
    elif episode_stats == "step":
        gf = jnp.broadcast_to(g[:, None], (b, s)).reshape(-1)
        ids, nb = dense_ids((gf,), tm.reshape(-1))
        flat = jnp.broadcast_to(ep_ret[:, None], (b, s)).reshape(-1)
        a_e = group_normalize(flat, ids, tm.reshape(-1), nb, std=std, eps=eps).reshape(b, s)
    else:
        raise ValueError(
            f"gigpo: episode_stats must be 'trajectory' or 'step', got {episode_stats!r}"
        )
    ret = rev_discounted_cumsum(r, gamma, tm)
    gf = jnp.broadcast_to(g[:, None], (b, s)).reshape(-1)
    af = jnp.asarray(anchor_ids, jnp.int32).reshape(-1)
    ids, nb = dense_ids((gf, af), tm.reshape(-1))
    a_s = group_normalize(ret.reshape(-1), ids, tm.reshape(-1), nb, std=std, eps=eps)
    a = a_e + omega * a_s.reshape(b, s)
    return jnp.where(tm, a, 0.0), jnp.where(tm, ret, 0.0)


@registry.register(
    "gigpo",
    inputs={"segment_id": "segment_id", "anchor_ids": "anchor_ids"},
    optional={"turn_mask": "turn_mask"},
)
def gigpo(
    token_rewards: Array,
    response_mask: Array,
    group_ids: Array,
    *,
    segment_id: Array | None = None,
    anchor_ids: Array | None = None,
    step_rewards: Array | None = None,
    turn_mask: Array | None = None,
    gamma: float = 0.95,
    omega: float = 1.0,
    mode: str = "mean_std_norm",
    episode_stats: str = "trajectory",
    eps: float = 1e-6,
) -> tuple[Array, Array]:
    """GiGPO token advantages: :func:`gigpo_step_advantages` broadcast over each turn.

    Args:
      token_rewards: ``[B, T]``; when ``step_rewards`` is None, a turn's reward is the sum of
        ``token_rewards`` over all tokens with that turn id (observation tokens included).
      segment_id: int ``[B, T]`` turn of each token (required).
      anchor_ids: int32 ``[B, S]`` anchor-state id of each turn (required; S = its width).
      step_rewards: optional float ``[B, S]``. turn_mask: optional bool ``[B, S]``.
      Other arguments: see :func:`gigpo_step_advantages`.

    Returns: ``(advantages, returns)`` ``[B, T]``; returns are the discounted turn returns.
    """
    if segment_id is None or anchor_ids is None:
        raise ValueError(
            "gigpo: keyword arguments 'segment_id' [B, T] and 'anchor_ids' [B, S] are required"
        )
    m = jnp.asarray(response_mask, bool)
    s = jnp.shape(anchor_ids)[1]
    tm = _turn_mask(segment_id, m, s, turn_mask)
    if step_rewards is None:
        step_rewards = _turn_rewards_from_tokens(token_rewards, segment_id, s)
    a, ret = gigpo_step_advantages(
        step_rewards,
        tm,
        group_ids,
        anchor_ids,
        gamma=gamma,
        omega=omega,
        mode=mode,
        episode_stats=episode_stats,
        eps=eps,
    )
    return broadcast_segments(a, segment_id, m), broadcast_segments(ret, segment_id, m)


def igpo_turn_rewards(
    answer_probs: Array,
    turn_mask: Array,
    final_score: Array,
    *,
    info_gain: str = "prob_diff",
) -> Array:
    """IGPO turn rewards: information gain on the ground-truth answer, F1 on the last turn.

    IGPO (Wang et al., ICLR 2026, arXiv 2510.14967)::

      p_k  = exp(mean log pi(gt answer tokens | q, turns 1..k))   (teacher-forced, k = 0: q only)
      r_k  = p_k - p_{k-1}  for turns k < T   (info_gain="prob_diff", paper; code default)
           = log p_k - log p_{k-1}            (info_gain="log_prob_diff", released train.sh)
      r_T  = final_score (answer F1, or the format penalty -2.0 in code)

    Args:
      answer_probs: float ``[B, S]``; column k is ``p_k``, the answer probability given the
        context *after k turns* (column 0: the question alone). Columns ``0 .. T_b - 1``
        are read (the last turn ends the episode, its reward is ``final_score``).
      turn_mask: bool ``[B, S]`` valid turns (prefix of each row, ``T_b`` of them).
      final_score: float ``[B]``.

    Returns: float32 ``[B, S]``, 0 on invalid turns.
    """
    tm = jnp.asarray(turn_mask, bool)
    p = jnp.where(tm, jnp.asarray(answer_probs, jnp.float32), 1.0)
    if info_gain == "log_prob_diff":
        p = jnp.log(jnp.maximum(p, 1e-30))
    elif info_gain != "prob_diff":
        raise ValueError(
            f"igpo: info_gain must be 'prob_diff' or 'log_prob_diff', got {info_gain!r}"
        )
    nxt_valid = jnp.concatenate([tm[:, 1:], jnp.zeros_like(tm[:, :1])], axis=1)
    p_next = jnp.concatenate([p[:, 1:], p[:, -1:]], axis=1)
    ig = p_next - p
    is_last = tm & ~nxt_valid
    r = jnp.where(is_last, jnp.asarray(final_score, jnp.float32)[:, None], ig)
    return jnp.where(tm, r, 0.0)


@registry.register(
    "igpo",
    inputs={"segment_id": "segment_id", "answer_probs": "answer_probs"},
    optional={"turn_mask": "turn_mask"},
)
def igpo(
    token_rewards: Array,
    response_mask: Array,
    group_ids: Array,
    *,
    segment_id: Array | None = None,
    answer_probs: Array | None = None,
    final_score: Array | None = None,
    turn_mask: Array | None = None,
    info_gain: str = "prob_diff",
    norm: str = "joint",
    gamma: float = 1.0,
) -> tuple[Array, Array]:
    """IGPO turn advantages: group-normalised turn rewards, discounted over later turns.

    Turn rewards from :func:`igpo_turn_rewards`; normalised within the prompt group
    (``docs/algorithms.md`` (TA) 5; new authors' code ``_compute_turn_level_advantage``)::

      rhat = (r - mean) / (sqrt(var_pop + 1e-8) + 1e-6)
        norm="joint"   : one pool per group (all turns of all rollouts; code default)
        norm="separate": info-gain turns and final turns in two pools (released train.sh)
      A_k = sum_{j >= k} gamma^{j-k} rhat_j    (gamma = 1.0), broadcast to the turn's tokens

    Deviation: the code finds turn boundaries where the reward is non-zero, so a turn with an
    information gain of exactly 0 merges into the next; here turns come from ``segment_id``.

    Args:
      segment_id: int ``[B, T]`` turn of each token (required).
      answer_probs: float ``[B, S]`` (required; see :func:`igpo_turn_rewards`).
      final_score: optional ``[B]``; else the masked row sum of ``token_rewards``.
      turn_mask: optional bool ``[B, S]``.

    Returns: ``(advantages, returns)`` ``[B, T]``; returns are the raw turn rewards' discounted
    sums (before normalisation).
    """
    if segment_id is None or answer_probs is None:
        raise ValueError(
            "igpo: keyword arguments 'segment_id' [B, T] and 'answer_probs' [B, S] are required"
        )
    m = jnp.asarray(response_mask, bool)
    b, s = jnp.shape(answer_probs)
    tm = _turn_mask(segment_id, m, s, turn_mask)
    if final_score is None:
        final_score = jnp.sum(jnp.where(m, jnp.asarray(token_rewards, jnp.float32), 0.0), -1)
    r = igpo_turn_rewards(answer_probs, tm, final_score, info_gain=info_gain)
    nxt_valid = jnp.concatenate([tm[:, 1:], jnp.zeros_like(tm[:, :1])], axis=1)
    is_last = tm & ~nxt_valid
    gf = jnp.broadcast_to(jnp.asarray(group_ids, jnp.int32)[:, None], (b, s)).reshape(-1)
    if norm == "joint":
        keys = (gf,)
    elif norm == "separate":
        keys = (gf, is_last.reshape(-1).astype(jnp.int32))
    else:
        raise ValueError(f"igpo: norm must be 'joint' or 'separate', got {norm!r}")
    flat_m = tm.reshape(-1)
    ids, nb = dense_ids(keys, flat_m)
    _, _, mean, var = group_moments(r.reshape(-1), ids, flat_m, nb)
    rhat = (r.reshape(-1) - mean) / (jnp.sqrt(var + 1e-8) + 1e-6)
    rhat = jnp.where(flat_m, rhat, 0.0).reshape(b, s)
    adv = rev_discounted_cumsum(rhat, gamma, tm)
    ret = rev_discounted_cumsum(r, gamma, tm)
    return broadcast_segments(adv, segment_id, m), broadcast_segments(ret, segment_id, m)
