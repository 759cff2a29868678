"""Private array helpers shared by the process / Monte Carlo / tree / agent estimators.

They differ on purpose from their namesakes in ``segments.py`` / ``scans.py``:
``rev_discounted_cumsum`` passes the running sum through masked positions (observation spans
of multi-turn episodes neither reset nor discount it; the PRIME / PURE / GiGPO codes' numbers
wherever the mask has no interior zeros), and
``group_moments`` / ``group_normalize`` group by several keys with a validity mask (anchor
states, per-step groups) rather than by one ``group_ids [B]``. Dense ids come from
:func:`jaxrl_reason.credit.segments.dense_ids`, shared with ``group_index``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxrl_reason.credit.segments import dense_ids  # noqa: F401  (re-exported)

Array = jax.Array


def rev_discounted_cumsum(x: Array, gamma: float | Array = 1.0, mask: Array | None = None) -> Array:
    """``G[..., t] = x[..., t] + gamma * G[..., t + 1]`` along the last axis (reverse scan).

    Positions outside ``mask`` contribute 0 and pass the running sum through unchanged,
    without a discount step: an observation span inside a multi-turn response (mask 0) neither
    cuts the return off nor discounts it. Without interior zeros in the mask (padding at the
    ends only) this equals the PRIME / PURE / GiGPO codes' convention, where masked positions
    count in the discount: after the last valid position everything is 0 anyway. Without a
    mask every position counts. Returns float32.
    """
    x = jnp.asarray(x, jnp.float32)
    keep = None
    if mask is not None:
        keep = jnp.asarray(mask, bool)
        x = jnp.where(keep, x, 0.0)
    gamma = jnp.asarray(gamma, jnp.float32)
    xt = jnp.moveaxis(x, -1, 0)
    kt = jnp.ones(xt.shape, bool) if keep is None else jnp.moveaxis(keep, -1, 0)

    def step(carry, xs):
        xi, ki = xs
        g = jnp.where(ki, xi + gamma * carry, carry)
        return g, g

    _, out = jax.lax.scan(step, jnp.zeros_like(xt[0]), (xt, kt), reverse=True)
    return jnp.moveaxis(out, 0, -1)


def group_moments(x: Array, ids: Array, valid: Array, num_buckets: int):
    """Per-row statistics of the row's group: ``(count, sum, mean, var_pop)``, each ``[M]``.

    ``x [M]`` float, ``ids int32[M]`` from :func:`dense_ids`, ``valid bool[M]``. Invalid rows
    see their own (empty) overflow bucket: count 0, statistics 0.
    """
    x = jnp.where(valid, jnp.asarray(x, jnp.float32), 0.0)
    w = jnp.asarray(valid, jnp.float32)
    cnt = jax.ops.segment_sum(w, ids, num_buckets)
    tot = jax.ops.segment_sum(x, ids, num_buckets)
    mean = tot / jnp.maximum(cnt, 1.0)
    dev = jnp.where(valid, x - mean[ids], 0.0)
    var = jax.ops.segment_sum(dev * dev, ids, num_buckets) / jnp.maximum(cnt, 1.0)
    cnt_r = jnp.where(valid, cnt[ids], 0.0)
    return (
        cnt_r,
        jnp.where(valid, tot[ids], 0.0),
        jnp.where(valid, mean[ids], 0.0),
        jnp.where(valid, var[ids], 0.0),
    )


def group_normalize(
    x: Array,
    ids: Array,
    valid: Array,
    num_buckets: int,
    *,
    std: str = "unbiased",
    eps: float = 1e-6,
) -> Array:
    """``(x - mean_group) / (std_group + eps)`` per row; 0 for invalid rows and singleton groups.

    ``std``: ``"unbiased"`` (torch.std, GRPO), ``"pop"`` (numpy std) or ``"none"`` (mean only).
    """
    cnt, _, mean, var = group_moments(x, ids, valid, num_buckets)
    centred = jnp.where(valid, jnp.asarray(x, jnp.float32) - mean, 0.0)
    if std == "none":
        out = centred
    else:
        if std == "unbiased":
            var = var * jnp.where(cnt > 1, cnt / jnp.maximum(cnt - 1.0, 1.0), 0.0)
        elif std != "pop":
            raise ValueError(f"std must be 'unbiased', 'pop' or 'none', got {std!r}")
        out = centred / (jnp.sqrt(var) + eps)
    return jnp.where(valid & (cnt > 1), out, 0.0)
