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

__all__ = ["mc_step_advantages", "spo_chain", "spo_prob_mask", "vineppo"]


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


@registry.register("vineppo", inputs={"segment_id": "segment_id", "step_values": "step_values"})
def vineppo(
    token_rewards: Array,
    response_mask: Array,
    group_ids: Array,
    *,
    segment_id: Array | None = None,
    step_values: Array | None = None,
    outcome: Array | None = None,
    whiten: bool = True,
) -> tuple[Array, Array]:
    """VinePPO: Monte Carlo step advantages broadcast to the tokens of each step.

    ``A[b, t] = A_{segment_id[b, t]}`` from :func:`mc_step_advantages`, then (``whiten``,
    VinePPO ``whiten_advantages: true``) ``masked_whiten`` over the whole batch.
    ``group_ids`` is unused (VinePPO has no group baseline; the MC value is the baseline).

    Args:
      token_rewards: ``[B, T]``; the masked row sum is the outcome ``R`` unless ``outcome``.
      response_mask: ``[B, T]``.
      segment_id: int ``[B, T]`` step of each token (EOS belongs to the last step).
      step_values: float ``[B, S]`` ``V(s_k)``; S is the padded number of steps.
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
    target, v = _step_targets(step_values, step_mask, o)
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


@registry.register(
    "spo_chain",
    inputs={"segment_id": "segment_id", "step_values": "step_values"},
    optional={"logp": "old_logprobs"},
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
    (``step_value_mask`` False; by default it is for segment 0 unless the first response
    token is itself a cut point, as in AIFrameResearch/SPO ``_compute_token_advantages``),
    the segment's advantage is 0. Then (``prob_mask``) ``A[t] = 0`` where ``p[t] >= rho`` and
    (``whiten``) ``masked_whiten`` over the tokens with ``p < rho``.

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
    known = step_mask if step_value_mask is None else step_mask & jnp.asarray(step_value_mask, bool)
    o = _outcome(token_rewards, m, outcome)
    target, v = _step_targets(step_values, step_mask, o)
    seg_adv = jnp.where(known, target - v, 0.0)
    adv = broadcast_segments(seg_adv, segment_id, m)
    ret = broadcast_segments(target, segment_id, m)
    loss_mask = m
    if prob_mask:
        if logp is None:
            raise ValueError("spo_chain: 'logp' [B, T] is required when prob_mask=True")
        loss_mask = spo_prob_mask(logp, m, rho=rho)
        adv = jnp.where(loss_mask, adv, 0.0)
    if whiten:
        adv = masked_whiten(adv, loss_mask)
    return adv, ret
