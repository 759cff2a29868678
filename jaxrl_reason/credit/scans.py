"""Reverse discounted scans over the response axis: discounted returns and GAE.

Both are ``lax.scan`` recurrences over time, run backwards, on ``[B, T]`` float32 arrays.
With Python-number ``gamma`` / ``lam`` they run through the token-level scan kernels
(:func:`jaxrl_reason.kernels.gae`, :func:`jaxrl_reason.kernels.discounted_cumsum`: Pallas on
GPU / TPU, ``lax.scan`` on CPU); traced discounts (changed without recompiling) use the
``lax.scan`` recurrences written here, which are the specification the kernels are tested
against.

Masks mid-sequence (multi-turn: tool / environment observation tokens carry ``mask == 0``)
are treated the way verl treats them, which differs between the two scans:

* :func:`discounted_returns` *resets* the running return at every masked-out token by
  default (verl's REINFORCE++ recurrence), so a return never crosses an observation span.
  ``reset_on_mask=False`` carries it through unchanged instead; ``credit.reinforce_pp`` uses
  that by default, so every turn of an episode sees the final reward (the two agree when the
  mask has no interior zeros).
* :func:`gae_scan` (verl's ``compute_gae_advantage_return``) *skips* masked-out tokens: the
  next value and the running advantage pass through them unchanged, so the TD error of the
  last token before an observation bootstraps from the value of the first token after it.

In both, a reward sitting on a masked-out token is ignored.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def _static(*xs) -> bool:
    """True when every ``x`` is a concrete Python number (the kernels take static floats)."""
    return all(isinstance(x, int | float) and not isinstance(x, bool) for x in xs)


def _check_2d(**arrays) -> tuple[int, int]:
    shapes = {name: tuple(jnp.shape(a)) for name, a in arrays.items()}
    first = next(iter(shapes.values()))
    if len(first) != 2:
        name = next(iter(shapes))
        raise ValueError(f"{name} must be [B, T]; got shape {first}")
    for name, shape in shapes.items():
        if shape != first:
            raise ValueError(
                f"{name} has shape {shape} but {next(iter(shapes))} has {first}; "
                "every per-token input must share one [B, T] shape"
            )
    return first


def discounted_returns(
    rewards: Array, mask: Array, gamma: float | Array = 1.0, *, reset_on_mask: bool = True
) -> Array:
    """Reverse discounted cumulative sum ``G_t = r_t + gamma * G_{t+1}`` over masked tokens.

    With ``reset_on_mask=True`` (verl ``compute_reinforce_plus_plus_outcome_advantage``)::

        G_t = m_t * (r_t + gamma * G_{t+1}),     G_T = 0

    so the return restarts after every masked-out token (end of sequence, observation span).
    With ``reset_on_mask=False`` masked-out tokens pass the return through untouched:
    ``G_t = m_t * (r_t + gamma * G_{t+1}) + (1 - m_t) * G_{t+1}``.

    Args:
      rewards: float ``[B, T]`` per-token rewards.
      mask: ``[B, T]`` 1/True on response tokens.
      gamma: discount, a Python float or a traced scalar (no recompilation when it changes).
      reset_on_mask: static; see above.

    Returns:
      float32 ``[B, T]`` returns, zero where ``mask`` is 0. An all-zero mask gives zeros.
    """
    _check_2d(rewards=rewards, mask=mask)
    if not reset_on_mask and _static(gamma):
        from jaxrl_reason.kernels import discounted_cumsum

        return discounted_cumsum(rewards, jnp.asarray(mask) > 0, gamma=float(gamma))
    r = jnp.asarray(rewards, jnp.float32)
    m = jnp.asarray(mask, jnp.float32)
    r = jnp.where(m > 0, r, 0.0)  # rewards on masked tokens never count (and NaN-safe)
    g = jnp.asarray(gamma, jnp.float32)

    def step(carry, xs):
        r_t, m_t = xs
        ret = r_t + g * carry
        nxt = ret * m_t if reset_on_mask else m_t * ret + (1.0 - m_t) * carry
        return nxt, ret

    init = jnp.zeros(r.shape[:1], jnp.float32)
    _, out = jax.lax.scan(step, init, (r.T, m.T), reverse=True)
    return out.T * m


def gae_scan(
    rewards: Array,
    values: Array,
    mask: Array,
    gamma: float | Array = 1.0,
    lam: float | Array = 1.0,
) -> tuple[Array, Array]:
    """Generalised Advantage Estimation (Schulman et al. 2016, arXiv 1506.02438, eq. 16).

    Backwards over ``t`` with ``A_T = 0``, ``V_T = 0`` (no bootstrap past the response)::

        delta_t = r_t + gamma * V_next - V_t
        A_t     = delta_t + gamma * lam * A_next          (on mask == 1 tokens)
        V_next, A_next <- V_t, A_t  on mask == 1 tokens; unchanged on mask == 0 tokens

    exactly the recurrence of verl ``compute_gae_advantage_return`` (before whitening).

    Args:
      rewards: float ``[B, T]`` per-token rewards (the outcome reward on the last token).
      values: float ``[B, T]`` critic values ``V(s_t)``.
      mask: ``[B, T]`` response tokens that carry loss.
      gamma, lam: discount and GAE lambda, Python floats or traced scalars.

    Returns:
      ``(advantages, returns)``, float32 ``[B, T]``, ``returns = advantages + values``; both
      zero where ``mask`` is 0. Deviation from verl: verl leaves the carried advantage (and
      ``advantage + value``) on masked-out positions; here they are zeroed.
    """
    _check_2d(rewards=rewards, values=values, mask=mask)
    if _static(gamma, lam):
        from jaxrl_reason.kernels import gae

        return gae(rewards, values, jnp.asarray(mask) > 0, gamma=float(gamma), lam=float(lam))
    m = jnp.asarray(mask, jnp.float32)
    r = jnp.where(m > 0, jnp.asarray(rewards, jnp.float32), 0.0)
    v = jnp.where(m > 0, jnp.asarray(values, jnp.float32), 0.0)
    g = jnp.asarray(gamma, jnp.float32)
    gl = g * jnp.asarray(lam, jnp.float32)

    def step(carry, xs):
        next_value, next_adv = carry
        r_t, v_t, m_t = xs
        adv = r_t + g * next_value - v_t + gl * next_adv
        keep = m_t > 0
        carry = (jnp.where(keep, v_t, next_value), jnp.where(keep, adv, next_adv))
        return carry, adv

    zeros = jnp.zeros(r.shape[:1], jnp.float32)
    _, adv = jax.lax.scan(step, (zeros, zeros), (r.T, v.T, m.T), reverse=True)
    adv = adv.T * m
    return adv, (adv + v) * m
