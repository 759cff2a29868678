"""Monte Carlo step values: VinePPO step advantages and SPO-chain segment advantages.

The values themselves come from extra rollouts started at step boundaries (sampled elsewhere,
on the host / sampler side): ``V(s_k) = mean outcome of K_mc continuations from the prefix
that ends before step k``. These functions turn them into advantages under ``jit``.

Registered estimators: ``vineppo``, ``spo_chain``. Building block: :func:`mc_step_advantages`.
Formulas and worked examples: ``docs/algorithms.md`` (PC) sections 3 (VinePPO) and 4a
(SPO-chain).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxrl_reason.credit import registry
from jaxrl_reason.credit.segments import broadcast_segments, masked_whiten, segment_reduce

Array = jax.Array

__all__ = [
    "fill_unestimated_values",
    "mc_step_advantages",
    "spo_chain",
    "spo_chain_loss_mask",
    "spo_prob_mask",
    "vineppo",
]


def _step_targets(step_values: Array, step_mask: Array, outcome: Array) -> tuple[Array, Array]:
    """``(target_k = r_k + V(s_{k+1}), V(s_k))`` with ``V`` after the last valid step = 0."""
    sm = jnp.asarray(step_mask, bool)
    v = jnp.where(sm, jnp.asarray(step_values, jnp.float32), 0.0)
    nxt_valid = jnp.concatenate([sm[:, 1:], jnp.zeros_like(sm[:, :1])], axis=1)
    v_next = jnp.concatenate([v[:, 1:], jnp.zeros_like(v[:, :1])], axis=1)
    v_next = jnp.where(nxt_valid, v_next, 0.0)
    is_last = sm & ~nxt_valid
    r = jnp.where(is_last, jnp.asarray(outcome, jnp.float32)[:, None], 0.0)
    return jnp.where(sm, r + v_next, 0.0), v


def fill_unestimated_values(
    step_values: Array, step_value_mask: Array | None, step_mask: Array, outcome: Array
) -> Array:
    """VinePPO's fill of states without a Monte Carlo estimate: ``V(s_k) = r_k + V(s_{k+1})``.

    McGill-NLP/VinePPO ``_compute_mc_value`` with ``max_step_for_value_estimation``: a state
    whose value was not estimated takes the trajectory's own return from it (gamma = 1,
    ``r_k = 0`` except ``r_{S_b - 1} = R``, ``V(s_{S_b}) = 0``), filled backwards. Its step's
    advantage ``r_k + V(s_{k+1}) - V(s_k)`` is then exactly 0, so the credit of an
    unestimated span goes to the estimated step before it. SPO-chain's unknown ``V(prompt)``
    (segment 0 gets advantage 0) is the same rule.

    Example (``S_b = 4``, estimated ``[T, T, F, F]``, values ``[0.5, 0.25, ., .]``, R = 1):
    ``V = [0.5, 0.25, 1, 1]``, advantages ``[-0.25, 0.75, 0, 0]``.

    Args:
      step_values: float ``[B, S]`` estimates (anything where not estimated).
      step_value_mask: bool ``[B, S]`` True where ``step_values`` is an estimate; None: all.
      step_mask: bool ``[B, S]`` valid steps (a prefix ``0 .. S_b - 1`` of each row).
      outcome: float ``[B]`` the trajectory's reward ``R``.

    Returns: float32 ``[B, S]``, the estimates where known, the fill elsewhere (0 off
    ``step_mask``).
    """
    sm = jnp.asarray(step_mask, bool)
    v = jnp.where(sm, jnp.asarray(step_values, jnp.float32), 0.0)
    if step_value_mask is None:
        return v
    known = jnp.asarray(step_value_mask, bool)
    o = jnp.asarray(outcome, jnp.float32)
    s = v.shape[1]
    cols = [None] * s
    nxt = jnp.zeros_like(o)  # V after the last valid step
    nxt_valid = jnp.zeros(o.shape, bool)
    for k in reversed(range(s)):
        r_k = jnp.where(sm[:, k] & ~nxt_valid, o, 0.0)
        fill = r_k + jnp.where(nxt_valid, nxt, 0.0)
        cols[k] = jnp.where(sm[:, k], jnp.where(known[:, k], v[:, k], fill), 0.0)
        nxt, nxt_valid = cols[k], sm[:, k]
    return jnp.stack(cols, axis=1)


def mc_step_advantages(step_values: Array, step_mask: Array, outcome: Array) -> Array:
    """VinePPO step advantages ``A_k = r_k + V(s_{k+1}) - V(s_k)`` (gamma = 1).

    VinePPO (Kazemnejad et al., ICML 2025, arXiv 2410.01679, Sec. 4): ``V(s_k)`` is the Monte
    Carlo value of the prefix before step k, ``V(s_S) = 0`` after the last step (terminal),
    ``r_k = 0`` except ``r_{S-1} = R`` (the outcome) on the last valid step. With exact values
    the advantages of a trajectory telescope to ``R - V(s_0)``.

    Args:
      step_values: float ``[B, S]``: ``V(s_k)`` at the start of step k.
      step_mask: bool ``[B, S]``: valid steps, a prefix ``0 .. S_b - 1`` of each row.
      outcome: float ``[B]``: the trajectory's reward ``R``.

    Returns: float32 ``[B, S]``, zero on invalid steps (values there may hold garbage).
    """
    target, v = _step_targets(step_values, step_mask, outcome)
    return jnp.where(jnp.asarray(step_mask, bool), target - v, 0.0)


def _outcome(token_rewards: Array, mask: Array, outcome: Array | None) -> Array:
    if outcome is not None:
        return jnp.asarray(outcome, jnp.float32)
    return jnp.sum(jnp.where(mask, jnp.asarray(token_rewards, jnp.float32), 0.0), axis=-1)


@registry.register(
    "vineppo",
    inputs={"segment_id": "segment_id", "step_values": "step_values"},
    optional={"step_value_mask": "step_value_mask"},
)
def vineppo(
    token_rewards: Array,
    response_mask: Array,
    group_ids: Array,
    *,
    segment_id: Array | None = None,
    step_values: Array | None = None,
    step_value_mask: Array | None = None,
    outcome: Array | None = None,
    whiten: bool = True,
) -> tuple[Array, Array]:
    """VinePPO: Monte Carlo step advantages broadcast to the tokens of each step.

    ``A[b, t] = A_{segment_id[b, t]}`` from :func:`mc_step_advantages`, then (``whiten``,
    VinePPO ``whiten_advantages: true``) ``masked_whiten`` over the whole batch.
    ``group_ids`` is unused (VinePPO has no group baseline; the MC value is the baseline).
    States without an estimate (``step_value_mask`` False) are filled by
    :func:`fill_unestimated_values` (VinePPO's ``V(s_k) = r_k + V(s_{k+1})``).

    Args:
      token_rewards: ``[B, T]``; the masked row sum is the outcome ``R`` unless ``outcome``.
      response_mask: ``[B, T]``.
      segment_id: int ``[B, T]`` step of each token (EOS belongs to the last step).
      step_values: float ``[B, S]`` ``V(s_k)``; S is the padded number of steps.
      step_value_mask: optional bool ``[B, S]``, True where ``step_values`` is an estimate
        (the vine strategy's ``Trajectories.step_value_mask``); None: all are.
      outcome: optional float ``[B]``.
      whiten: True.

    Returns: ``(advantages, returns)`` ``[B, T]``; returns are the MC targets
    ``r_k + V(s_{k+1})`` of each token's step.
    """
    if segment_id is None or step_values is None:
        raise ValueError(
            "vineppo: keyword arguments 'segment_id' [B, T] and 'step_values' [B, S] are required"
        )
    m = jnp.asarray(response_mask, bool)
    s = jnp.shape(step_values)[1]
    _, step_mask = segment_reduce(jnp.zeros(m.shape), segment_id, m, s, "count")
    o = _outcome(token_rewards, m, outcome)
    filled = fill_unestimated_values(step_values, step_value_mask, step_mask, o)
    target, v = _step_targets(filled, step_mask, o)
    adv_tok = broadcast_segments(jnp.where(step_mask, target - v, 0.0), segment_id, m)
    ret_tok = broadcast_segments(target, segment_id, m)
    if whiten:
        adv_tok = masked_whiten(adv_tok, m)
    return adv_tok, ret_tok


def spo_prob_mask(logp: Array, response_mask: Array, *, rho: float = 0.9) -> Array:
    """SPO's probability mask: tokens with ``exp(logp) < rho`` (the cut-point candidates).

    SPO (Guo et al., arXiv 2505.23564) trains only on low-probability tokens: pass
    ``response_mask & spo_prob_mask(...)`` to the policy loss (the estimator already zeroes the
    advantages of the other tokens). ``logp`` are the behaviour/actor log-probs ``[B, T]``.
    Returns bool ``[B, T]``.
    """
    return jnp.asarray(response_mask, bool) & (jnp.exp(jnp.asarray(logp, jnp.float32)) < rho)


def spo_chain_loss_mask(
    response_mask: Array,
    *,
    logp: Array | None = None,
    rho: float = 0.9,
    prob_mask: bool = True,
    **_: object,
) -> Array:
    """The tokens SPO-chain's policy loss trains on: ``response_mask & (p < rho)`` with
    ``prob_mask`` (AIFrameResearch/SPO ``ppo_trainer._compute_actor_loss`` with
    ``use_prob_mask``; ``p = exp(logp)`` of the behaviour policy), else ``response_mask``.

    Registered as spo_chain's loss-mask transform (``credit.loss_mask_fn("spo_chain")``): the
    credit phase stores it as ``Trajectories.update_mask`` and the update masks the policy
    loss, KL and entropy with it, so tokens with ``p >= rho`` get exactly zero gradient.
    Takes spo_chain's keyword arguments (others ignored). Returns bool ``[B, T]``.
    """
    m = jnp.asarray(response_mask, bool)
    if not prob_mask:
        return m
    if logp is None:
        raise ValueError("spo_chain: 'logp' [B, T] is required when prob_mask=True")
    return spo_prob_mask(logp, m, rho=rho)


@registry.register(
    "spo_chain",
    inputs={"segment_id": "segment_id", "step_values": "step_values"},
    optional={"logp": "old_logprobs", "step_value_mask": "step_value_mask"},
    loss_mask=spo_chain_loss_mask,
)
def spo_chain(
    token_rewards: Array,
    response_mask: Array,
    group_ids: Array,
    *,
    segment_id: Array | None = None,
    step_values: Array | None = None,
    step_value_mask: Array | None = None,
    logp: Array | None = None,
    outcome: Array | None = None,
    rho: float = 0.9,
    prob_mask: bool = True,
    whiten: bool = True,
) -> tuple[Array, Array]:
    """SPO-chain segment advantages ``A_k = V(c_{k+1}) - V(c_k)``, last ``R - V(c_n)``.

    Segments are cut after cut points ``c`` (every ``interval``-th token with ``p < rho``;
    :func:`jaxrl_reason.rollout.steps.spo_chain_segment_ids`). ``step_values[b, k]`` is the MC
    value of the state before segment k, i.e. ``V(prefix up to c_k)``; the segment
    advantage is then :func:`mc_step_advantages`. Where the value before a segment is unknown
    (``step_value_mask`` False; in SPO's code it is for segment 0 unless the first response
    token is itself a cut point, AIFrameResearch/SPO ``_compute_token_advantages``), it is
    filled by :func:`fill_unestimated_values`, which gives the segment advantage 0 (SPO's
    rule) and the segment before it the credit up to the next known value. Then
    (``prob_mask``) ``A[t] = 0`` where ``p[t] >= rho`` and (``whiten``) ``masked_whiten``
    over the tokens with ``p < rho``.

    Args:
      segment_id: int ``[B, T]`` (required). step_values: float ``[B, S]`` (required).
      step_value_mask: optional bool ``[B, S]``; default all valid segments known.
      logp: ``[B, T]`` actor log-probs of the sampled tokens (required when ``prob_mask``).
      outcome: optional ``[B]`` (else the masked row sum of ``token_rewards``).
      rho: 0.9. prob_mask: True. whiten: True (``whiten_advantages: true``).

    Returns: ``(advantages, returns)`` ``[B, T]``; advantages are zero outside
    ``response_mask & p < rho`` (pass the same mask to the loss: :func:`spo_prob_mask`).
    """
    if segment_id is None or step_values is None:
        raise ValueError(
            "spo_chain: keyword arguments 'segment_id' [B, T] and 'step_values' [B, S] are required"
        )
    m = jnp.asarray(response_mask, bool)
    s = jnp.shape(step_values)[1]
    _, step_mask = segment_reduce(jnp.zeros(m.shape), segment_id, m, s, "count")
    o = _outcome(token_rewards, m, outcome)
    filled = fill_unestimated_values(step_values, step_value_mask, step_mask, o)
    target, v = _step_targets(filled, step_mask, o)
    seg_adv = jnp.where(step_mask, target - v, 0.0)
    adv = broadcast_segments(seg_adv, segment_id, m)
    ret = broadcast_segments(target, segment_id, m)
    loss_mask = spo_chain_loss_mask(m, logp=logp, rho=rho, prob_mask=prob_mask)
    if prob_mask:
        adv = jnp.where(loss_mask, adv, 0.0)
    if whiten:
        adv = masked_whiten(adv, loss_mask)
    return adv, ret
