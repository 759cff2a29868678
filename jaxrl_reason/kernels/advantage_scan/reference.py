"""Plain-jnp specification of the token-level advantage scans: a Python loop over time,
transcribed from verl's ``compute_gae_advantage_return`` (volcengine/verl,
``verl/trainer/ppo/core_algos.py``, 2026-01 main).

Masked positions inside a sequence (tool or environment observation tokens) are *skipped*: they
neither add a TD error nor break the recursion, and the value used as ``V(s_{t+1})`` is that of
the next *unmasked* token (verl: "skip values and TD-error on observation tokens"). Outputs are
zero at masked positions (verl leaves the carried value there; it is never used because every
loss masks it).
"""

from __future__ import annotations

import jax.numpy as jnp


def gae_reference(rewards, values, mask, *, gamma: float, lam: float):
    """GAE (Schulman et al. 2016, arXiv 1506.02438, Eq. 16) over ``[B, T]`` token rows.

    ``delta_t = r_t + gamma V_next - V_t`` and ``A_t = delta_t + gamma lam A_next``, where
    ``next`` is the next unmasked position (0 past the end). Returns float32
    ``(advantages, returns = advantages + values)``, zero where ``mask`` is False.
    """
    r = jnp.asarray(rewards, jnp.float32)
    v = jnp.asarray(values, jnp.float32)
    m = jnp.asarray(mask).astype(bool)
    nextv = jnp.zeros(r.shape[:1], jnp.float32)
    last = jnp.zeros(r.shape[:1], jnp.float32)
    adv = []
    for t in reversed(range(r.shape[1])):
        delta = r[:, t] + gamma * nextv - v[:, t]
        a = delta + gamma * lam * last
        nextv = jnp.where(m[:, t], v[:, t], nextv)
        last = jnp.where(m[:, t], a, last)
        adv.append(last)
    adv = jnp.stack(adv[::-1], axis=1)
    return jnp.where(m, adv, 0.0), jnp.where(m, adv + v, 0.0)


def discounted_cumsum_reference(x, mask, *, gamma: float):
    """Masked reverse discounted cumulative sum over ``[B, T]``.

    ``y_t = x_t + gamma * y_next`` with ``next`` the next unmasked position (masked positions
    are skipped: their ``x`` is ignored and they do not discount). float32, zero off ``mask``.
    """
    x = jnp.asarray(x, jnp.float32)
    m = jnp.asarray(mask).astype(bool)
    acc = jnp.zeros(x.shape[:1], jnp.float32)
    out = []
    for t in reversed(range(x.shape[1])):
        acc = jnp.where(m[:, t], x[:, t] + gamma * acc, acc)
        out.append(acc)
    return jnp.where(m, jnp.stack(out[::-1], axis=1), 0.0)


__all__ = ["gae_reference", "discounted_cumsum_reference"]
