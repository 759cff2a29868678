"""PPO's clipped value (critic) loss."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxrl_reason.credit.segments import masked_mean
from jaxrl_reason.losses.aggregation import aggregate, check_same_2d

Array = jax.Array


def value_loss(
    vpreds: Array,
    returns: Array,
    values: Array,
    response_mask: Array,
    *,
    cliprange_value: float = 0.5,
    agg_mode: str = "token-mean",
    loss_scale_factor: float | None = None,
    num_tokens: float | Array | None = None,
    num_seqs: float | Array | None = None,
) -> tuple[Array, dict[str, Array]]:
    """Clipped value loss of PPO (verl ``compute_value_loss``, after OpenAI baselines' PPO2).

    Per token, with ``v_clip = clip(vpred, v_old - c, v_old + c)``::

        l = max((vpred - R)^2, (v_clip - R)^2),      loss = 0.5 * aggregate(l)

    The pessimistic ``max`` keeps the critic from moving its prediction further than ``c``
    from the rollout-time value in one update; where the clipped branch is active the
    gradient w.r.t. ``vpred`` is zero.

    Args:
      vpreds: float ``[B, T]`` current critic predictions (differentiate w.r.t. these).
      returns: float ``[B, T]`` targets (``returns`` of :func:`~jaxrl_reason.credit.gae`).
      values: float ``[B, T]`` critic values at rollout time (constants). Argument order as
        verl: ``(vpreds, returns, values, mask)``.
      response_mask: ``[B, T]``.
      cliprange_value: ``c`` (verl's critic default 0.5).
      agg_mode: static aggregation mode; loss_scale_factor, num_tokens, num_seqs as in
        :func:`~jaxrl_reason.losses.aggregate`.

    Returns:
      ``(loss, metrics)``: float32 scalar; ``metrics["vf_clipfrac"]`` is the fraction of
      masked tokens on the clipped branch, ``metrics["vpred_mean"]`` the masked mean
      prediction. Empty mask: loss 0, metrics 0.
    """
    check_same_2d(vpreds=vpreds, returns=returns, values=values, response_mask=response_mask)
    on = jnp.asarray(response_mask, jnp.float32) > 0
    vp = jnp.where(on, jnp.asarray(vpreds, jnp.float32), 0.0)
    ret = jax.lax.stop_gradient(jnp.where(on, jnp.asarray(returns, jnp.float32), 0.0))
    old = jax.lax.stop_gradient(jnp.where(on, jnp.asarray(values, jnp.float32), 0.0))
    v_clip = jnp.clip(vp, old - cliprange_value, old + cliprange_value)
    loss1 = jnp.square(vp - ret)
    loss2 = jnp.square(v_clip - ret)
    clipped = loss2 > loss1
    per_token = jnp.where(clipped, loss2, loss1)
    loss = 0.5 * aggregate(
        per_token,
        response_mask,
        agg_mode,
        loss_scale_factor=loss_scale_factor,
        num_tokens=num_tokens,
        num_seqs=num_seqs,
    )
    metrics = {
        "vf_clipfrac": masked_mean(clipped.astype(jnp.float32), response_mask),
        "vpred_mean": jax.lax.stop_gradient(masked_mean(vp, response_mask)),
    }
    return loss, metrics
