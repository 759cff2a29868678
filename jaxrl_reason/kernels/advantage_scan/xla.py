"""XLA advantage scans: ``lax.scan`` over reversed time (default) or ``lax.associative_scan``
over affine maps (``O(log T)`` depth, for accelerators where a ``T``-step loop is slow).

Both write the skip-masked recursions of ``reference.py`` as first-order affine recurrences
``c_t = a_t c_{t+1} + b_t``:

* next unmasked value: ``a = 1 - m``, ``b = m V_t`` (then ``V_next(t) = c_{t+1}``);
* GAE: ``a = m gamma lam + (1 - m)``, ``b = m delta_t``;
* discounted sum: ``a = m gamma + (1 - m)``, ``b = m x_t``.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax


def _affine_reverse(a, b, method):
    """``c_t = a_t c_{t+1} + b_t`` along axis 1 of ``[B, T]``, ``c_T = 0``."""
    if method == "associative":
        # Compose maps right to left: (a1, b1) after (a2, b2) = (a1 a2, a1 b2 + b1).
        def combine(later, earlier):
            a2, b2 = later
            a1, b1 = earlier
            return a1 * a2, a1 * b2 + b1

        _, c = lax.associative_scan(combine, (a, b), reverse=True, axis=1)
        return c

    def step(c, ab):
        at, bt = ab
        c = at * c + bt
        return c, c

    _, c = lax.scan(step, jnp.zeros(a.shape[:1], a.dtype), (a.T, b.T), reverse=True)
    return c.T


def _shift_left(c):
    """``c_{t+1}`` with 0 past the end."""
    return jnp.concatenate([c[:, 1:], jnp.zeros_like(c[:, :1])], axis=1)


def gae(rewards, values, mask, *, gamma, lam, method="scan"):
    r = rewards.astype(jnp.float32)
    v = values.astype(jnp.float32)
    m = mask.astype(jnp.float32)
    nextv = _shift_left(_affine_reverse(1.0 - m, m * v, method))
    delta = r + gamma * nextv - v
    adv = _affine_reverse(m * (gamma * lam) + (1.0 - m), m * delta, method)
    keep = mask.astype(bool)
    return jnp.where(keep, adv, 0.0), jnp.where(keep, adv + v, 0.0)


def discounted_cumsum(x, mask, *, gamma, method="scan"):
    m = mask.astype(jnp.float32)
    y = _affine_reverse(m * gamma + (1.0 - m), m * x.astype(jnp.float32), method)
    return jnp.where(mask.astype(bool), y, 0.0)
