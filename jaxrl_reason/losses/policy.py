"""Clipped policy-gradient losses: PPO (with clip-higher and dual-clip) and GSPO."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxrl_reason.credit.segments import masked_mean
from jaxrl_reason.losses.aggregation import aggregate, check_agg_mode, check_same_2d

Array = jax.Array

LOSS_TYPES: tuple[str, ...] = ("ppo", "gspo")

# verl clamps the token log-ratio before exp so one stale token cannot overflow the ratio.
_LOG_RATIO_CLAMP = 20.0
# verl's GSPO clamps the (sequence) log-ratio from above only.
_GSPO_LOG_RATIO_MAX = 10.0


def _masked_extreme(x: Array, mask: Array, fn) -> Array:
    m = jnp.asarray(mask, bool)
    fill = jnp.inf if fn is jnp.min else -jnp.inf
    out = fn(jnp.where(m, x, fill))
    return jnp.where(jnp.any(m), out, 0.0)


def policy_loss(
    logprobs: Array,
    old_logprobs: Array,
    advantages: Array,
    response_mask: Array,
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    dual_clip: float | None = None,
    agg_mode: str | None = None,
    loss_type: str = "ppo",
    loss_scale_factor: float | None = None,
    num_tokens: float | Array | None = None,
    num_seqs: float | Array | None = None,
) -> tuple[Array, dict[str, Array]]:
    """Clipped surrogate policy loss, to be minimised.

    ``loss_type="ppo"`` (Schulman et al. 2017, arXiv 1707.06347; verl
    ``compute_policy_loss_vanilla``), per token with ``r = exp(clip(logp - logp_old, -20, 20))``::

        l = max(-A r, -A clip(r, 1 - clip_low, 1 + clip_high))

    ``clip_high > clip_low`` is DAPO's clip-higher (arXiv 2503.14476). With ``dual_clip = c``
    (Ye et al. 2020, arXiv 1912.09729) tokens with ``A < 0`` are further bounded,
    ``l = min(l, -A c)``, so a huge ratio on a bad token cannot blow up the loss.

    ``loss_type="gspo"`` (Zheng et al. 2025, arXiv 2507.18071; verl
    ``compute_policy_loss_gspo``) replaces ``r`` by the sequence-level, length-normalised ratio
    ``s_i = exp(mean_t (logp - logp_old))`` (the geometric mean of token ratios), written per
    token as ``exp(sg[log s_i] + logp_t - sg[logp_t])`` and clamped at ``exp(10)``: its value is
    ``s_i`` on every token and its gradient is ``s_i * grad logp_t``, which after
    ``seq-mean-token-mean`` aggregation is exactly GSPO's ``s_i * grad log s_i``.

    Gradients: a token whose clipped branch is active (``pg_clipfrac``) or whose dual-clip
    bound is active (``pg_clipfrac_lower``) contributes exactly zero gradient; the branch is
    chosen with ``where`` (not ``maximum``, which would split the gradient at ties).

    Args:
      logprobs: float ``[B, T]`` log-probs of the sampled tokens under the current policy
        (differentiate w.r.t. these).
      old_logprobs: float ``[B, T]`` behaviour-policy log-probs (treated as constants).
        Note the order: verl's functions take ``old_log_prob`` first.
      advantages: float ``[B, T]``.
      response_mask: ``[B, T]``.
      clip_low, clip_high: epsilons of the ratio interval ``[1 - low, 1 + high]`` (Python
        floats, validated; traced scalars are accepted unchecked).
      dual_clip: constant ``c > 1``, or None (static) for no dual clip. Deviation: verl's
        vanilla loss always applies ``clip_ratio_c = 3.0``; pass ``dual_clip=3.0`` to match
        it exactly (the two agree whenever no negative-advantage token has ratio > 3).
        Not defined for ``gspo`` (verl does not apply it there either).
      agg_mode: static aggregation mode (:func:`~jaxrl_reason.losses.aggregate`); None means
        verl's default for the loss type: ``token-mean`` for ppo, ``seq-mean-token-mean``
        for gspo (verl's GSPO ignores the configured mode; here an explicit one is honoured).
      loss_type: static, ``"ppo"`` or ``"gspo"``.
      loss_scale_factor, num_tokens, num_seqs: passed to :func:`aggregate`.

    Returns:
      ``(loss, metrics)``: float32 scalar and a dict of float32 scalars: ``pg_clipfrac``
      (fraction of masked tokens on the clipped branch), ``ppo_kl`` (``mean(logp_old - logp)``,
      an approximate KL(old || new)), ``pg_clipfrac_lower`` (fraction bounded by the dual
      clip; 0 without it), ``ratio_mean``, ``ratio_min``, ``ratio_max`` (of the ratio used by
      the loss). An empty mask gives loss 0 and metrics 0.

    Raises:
      ValueError: unknown ``loss_type`` / ``agg_mode``, ``dual_clip <= 1``, dual clip with
        gspo, negative clip epsilons, or mismatched shapes.
    """
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"unknown loss_type {loss_type!r}; valid types: {', '.join(LOSS_TYPES)}")
    if agg_mode is None:
        agg_mode = "token-mean" if loss_type == "ppo" else "seq-mean-token-mean"
    check_agg_mode(agg_mode)
    check_same_2d(
        logprobs=logprobs,
        old_logprobs=old_logprobs,
        advantages=advantages,
        response_mask=response_mask,
    )
    for name, eps in (("clip_low", clip_low), ("clip_high", clip_high)):
        if isinstance(eps, int | float) and not eps >= 0:
            raise ValueError(f"{name} must be >= 0 (an epsilon of the ratio interval); got {eps}")
    if dual_clip is not None:
        if loss_type == "gspo":
            raise ValueError("dual_clip is not defined for loss_type='gspo'; set dual_clip=None")
        if isinstance(dual_clip, int | float) and not dual_clip > 1.0:
            raise ValueError(
                f"dual_clip must be > 1 (verl asserts clip_ratio_c > 1); got {dual_clip}"
            )

    mask = jnp.asarray(response_mask, jnp.float32)
    on = mask > 0
    # Zero the inputs outside the mask so padding garbage can never produce inf * 0 = NaN.
    logp = jnp.where(on, jnp.asarray(logprobs, jnp.float32), 0.0)
    old = jnp.where(on, jnp.asarray(old_logprobs, jnp.float32), 0.0)
    adv = jnp.where(on, jnp.asarray(advantages, jnp.float32), 0.0)
    old = jax.lax.stop_gradient(old)
    adv = jax.lax.stop_gradient(adv)

    if loss_type == "ppo":
        log_ratio = jnp.clip(logp - old, -_LOG_RATIO_CLAMP, _LOG_RATIO_CLAMP)
        ppo_kl = masked_mean(-log_ratio, mask)
    else:
        log_ratio_tok = logp - old
        ppo_kl = masked_mean(-log_ratio_tok, mask)
        seq_len = jnp.maximum(jnp.sum(mask, axis=-1), 1.0)
        seq_log_ratio = jnp.sum(log_ratio_tok * mask, axis=-1) / seq_len
        log_ratio = logp - jax.lax.stop_gradient(logp)
        log_ratio = log_ratio + jax.lax.stop_gradient(seq_log_ratio)[:, None]
        log_ratio = jnp.minimum(log_ratio, _GSPO_LOG_RATIO_MAX)
    ratio = jnp.exp(log_ratio)

    loss1 = -adv * ratio
    loss2 = -adv * jnp.clip(ratio, 1.0 - clip_low, 1.0 + clip_high)
    clipped = loss2 > loss1
    per_token = jnp.where(clipped, loss2, loss1)
    if dual_clip is not None:
        loss3 = -adv * dual_clip
        lower = (per_token > loss3) & (adv < 0)
        per_token = jnp.where(lower, loss3, per_token)
        clipfrac_lower = masked_mean(lower.astype(jnp.float32), mask)
    else:
        clipfrac_lower = jnp.zeros((), jnp.float32)

    loss = aggregate(
        per_token,
        mask,
        agg_mode,
        loss_scale_factor=loss_scale_factor,
        num_tokens=num_tokens,
        num_seqs=num_seqs,
    )
    ratio_sg = jax.lax.stop_gradient(ratio)
    metrics = {
        "pg_clipfrac": masked_mean(clipped.astype(jnp.float32), mask),
        "ppo_kl": jax.lax.stop_gradient(ppo_kl),
        "pg_clipfrac_lower": clipfrac_lower,
        "ratio_mean": masked_mean(ratio_sg, mask),
        "ratio_min": _masked_extreme(ratio_sg, mask, jnp.min),
        "ratio_max": _masked_extreme(ratio_sg, mask, jnp.max),
    }
    return loss, metrics
