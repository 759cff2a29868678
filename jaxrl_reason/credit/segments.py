"""Masked statistics and per-segment (step / turn / tree-edge) reductions.

Conventions shared by every credit function:

* ``mask [B, T]`` is 1 (or True) on response tokens that carry loss, 0 elsewhere. Values at
  masked-out positions may hold anything (padding garbage, NaN is *not* allowed in float
  inputs because ``0 * nan = nan``; use ``jnp.where`` upstream) and never change a result.
* ``segment_id int32[B, T]`` numbers the steps of one response ``0 .. S-1``; positions with
  ``mask == 0`` are ignored whatever their id. Ids at or above ``num_segments`` are dropped.
* Segment outputs are ``[B, S]`` with a ``segment_mask [B, S]`` that is True where the segment
  holds at least one masked token. Empty segments hold 0.
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp

Array = jax.Array
SegmentOp = Literal["sum", "mean", "min", "max", "count"]
SEGMENT_OPS: tuple[str, ...] = ("sum", "mean", "min", "max", "count")


def masked_sum(x: Array, mask: Array, axis=None) -> Array:
    """``sum(x * mask)`` with masked-out entries excluded even when they are inf.

    Shapes: ``x`` and ``mask`` broadcastable; returns float32 reduced over ``axis``.
    """
    x = jnp.asarray(x, jnp.float32)
    return jnp.sum(jnp.where(jnp.asarray(mask, bool), x, 0.0), axis=axis)


def masked_mean(x: Array, mask: Array, axis=None) -> Array:
    """Mean of ``x`` over ``mask``; 0 where the mask is empty (never NaN).

    Shapes: ``x``, ``mask`` broadcastable; float32 result reduced over ``axis``.
    """
    mask = jnp.asarray(mask, jnp.float32)
    n = jnp.sum(jnp.broadcast_to(mask, jnp.shape(x)), axis=axis)
    return masked_sum(x, mask, axis) / jnp.maximum(n, 1.0)


def masked_var(x: Array, mask: Array, *, unbiased: bool = True, axis=None) -> Array:
    """Variance over ``mask`` (verl ``masked_var``: Bessel-corrected when ``unbiased``).

    Deviation from verl: verl raises on an empty mask and returns NaN for a single
    element (``n / (n - 1)`` with ``n = 1``); here both give variance 0 so that whitening
    yields finite zeros.
    """
    mask_f = jnp.broadcast_to(jnp.asarray(mask, jnp.float32), jnp.shape(x))
    mean = masked_mean(x, mask_f, axis=axis)
    if axis is not None:
        mean = jnp.expand_dims(mean, axis)
    var = masked_mean(jnp.square(jnp.asarray(x, jnp.float32) - mean), mask_f, axis=axis)
    if unbiased:
        n = jnp.sum(mask_f, axis=axis)
        var = var * jnp.where(n > 1, n / jnp.maximum(n - 1.0, 1.0), 1.0)
    return var


def masked_whiten(x: Array, mask: Array, *, shift_mean: bool = True, eps: float = 1e-8) -> Array:
    """Whitens ``x`` over every masked entry of the batch (verl ``masked_whiten``).

    ``out = (x - mu) / sqrt(var_unbiased + eps)`` (``+ mu`` back when not ``shift_mean``),
    with mean and variance over all masked entries jointly. Deviation from verl: the
    result is multiplied by ``mask`` (verl leaves ``(0 - mu) / sd`` in padding), so
    advantages are zero outside the mask as this project's contract says.

    Shapes: ``x [..]``, ``mask [..]`` same shape. Returns float32.
    """
    mask_f = jnp.asarray(mask, jnp.float32)
    x = jnp.where(mask_f > 0, jnp.asarray(x, jnp.float32), 0.0)
    mu = masked_mean(x, mask_f)
    var = masked_var(x, mask_f, unbiased=True)
    out = (x - mu) * jax.lax.rsqrt(var + eps)
    if not shift_mean:
        out = out + mu
    return out * mask_f


def segment_reduce(
    x: Array,
    segment_id: Array,
    mask: Array,
    num_segments: int,
    op: SegmentOp = "sum",
) -> tuple[Array, Array]:
    """Per-segment reduction of token values.

    Args:
      x: float ``[B, T]`` token values.
      segment_id: int ``[B, T]`` step index of each token, ``0 .. num_segments - 1``.
      mask: ``[B, T]`` tokens that count.
      num_segments: static ``S``.
      op: one of ``sum``, ``mean``, ``min``, ``max``, ``count``.

    Returns:
      ``(values [B, S] float32, segment_mask [B, S] bool)``; empty segments hold 0.
    """
    if op not in SEGMENT_OPS:
        raise ValueError(f"unknown segment op {op!r}; valid ops: {', '.join(SEGMENT_OPS)}")
    b, t = jnp.shape(x)
    seg = jnp.asarray(segment_id, jnp.int32)
    valid = jnp.asarray(mask, bool) & (seg >= 0) & (seg < num_segments)
    # Flatten (row, segment) into one id; invalid tokens go to an overflow bucket.
    flat = jnp.where(
        valid, jnp.arange(b, dtype=jnp.int32)[:, None] * num_segments + seg, b * num_segments
    )
    flat = flat.reshape(-1)
    n_buckets = b * num_segments + 1
    xf = jnp.asarray(x, jnp.float32).reshape(-1)
    count = jax.ops.segment_sum(valid.reshape(-1).astype(jnp.float32), flat, n_buckets)
    if op in ("sum", "mean", "count"):
        total = jax.ops.segment_sum(jnp.where(valid.reshape(-1), xf, 0.0), flat, n_buckets)
        if op == "sum":
            out = total
        elif op == "mean":
            out = total / jnp.maximum(count, 1.0)
        else:
            out = count
    elif op == "min":
        out = jax.ops.segment_min(jnp.where(valid.reshape(-1), xf, jnp.inf), flat, n_buckets)
    else:
        out = jax.ops.segment_max(jnp.where(valid.reshape(-1), xf, -jnp.inf), flat, n_buckets)
    seg_mask = (count > 0)[:-1].reshape(b, num_segments)
    out = jnp.where(seg_mask, out[:-1].reshape(b, num_segments), 0.0)
    return out, seg_mask


def broadcast_segments(seg_values: Array, segment_id: Array, mask: Array) -> Array:
    """Gathers per-segment values back to tokens: ``out[b, t] = seg_values[b, segment_id[b, t]]``.

    Shapes: ``seg_values [B, S]``, ``segment_id [B, T]``, ``mask [B, T]`` -> ``[B, T]``
    float32, zero where ``mask`` is 0 or the id is out of range.
    """
    s = jnp.shape(seg_values)[1]
    seg = jnp.asarray(segment_id, jnp.int32)
    ok = jnp.asarray(mask, bool) & (seg >= 0) & (seg < s)
    vals = jnp.take_along_axis(
        jnp.asarray(seg_values, jnp.float32), jnp.clip(seg, 0, s - 1), axis=1
    )
    return jnp.where(ok, vals, 0.0)


def segment_reduce_broadcast(
    x: Array, segment_id: Array, mask: Array, num_segments: int, op: SegmentOp = "sum"
) -> Array:
    """:func:`segment_reduce` then :func:`broadcast_segments`: every token gets its step's value.

    Shapes: ``[B, T]`` in, ``[B, T]`` float32 out (zero outside ``mask``).
    """
    vals, _ = segment_reduce(x, segment_id, mask, num_segments, op)
    return broadcast_segments(vals, segment_id, mask)


def segment_ends(segment_id: Array, mask: Array, num_segments: int) -> tuple[Array, Array]:
    """Index of the last masked token of each segment.

    Returns ``(end_index int32[B, S], segment_mask bool[B, S])``; empty segments hold -1.
    """
    b, t = jnp.shape(segment_id)
    pos = jnp.broadcast_to(jnp.arange(t, dtype=jnp.float32), (b, t))
    last, seg_mask = segment_reduce(pos, segment_id, mask, num_segments, "max")
    return jnp.where(seg_mask, last, -1).astype(jnp.int32), seg_mask


# --- Prompt groups (GRPO / RLOO): statistics over rows that share a group id. ---------------


def group_index(group_ids: Array) -> Array:
    """Maps arbitrary integer group ids to dense ids ``0 .. G-1`` (G <= B), jit-able.

    Rows with equal ``group_ids`` get equal dense ids; ids are numbered in increasing order of
    the original id. Works for any int values (e.g. dataset prompt indices), without a static
    number of groups, by a stable sort: O(B log B), no [B, B] matrix.

    Shapes: ``group_ids int[B]`` -> ``int32[B]``.
    """
    g = jnp.asarray(group_ids)
    if g.ndim != 1:
        raise ValueError(f"group_ids must be int[B]; got shape {g.shape}")
    if not jnp.issubdtype(g.dtype, jnp.integer):
        raise ValueError(
            f"group_ids must hold integers (one id per prompt); got dtype {g.dtype}. "
            "Cast with .astype(jnp.int32)"
        )
    if g.shape[0] == 0:
        return jnp.zeros((0,), jnp.int32)
    return dense_ids((g,), jnp.ones(g.shape, bool))[0]


def dense_ids(keys: tuple[Array, ...], valid: Array) -> tuple[Array, Array]:
    """Dense group numbers ``0 .. G-1`` for rows that share every key (a jit-able ``unique``).

    Args:
      keys: int arrays ``[M]``; rows with equal values in all keys form one group.
      valid: bool ``[M]``; invalid rows get id ``M`` (an overflow bucket) and join no group.

    Returns:
      ``(ids int32[M], num_buckets)`` with ``num_buckets = M + 1`` (static), for
      ``jax.ops.segment_sum(..., num_segments=num_buckets)``.

    Sorting (``O(M log M)``) instead of a pairwise ``[M, M]`` comparison keeps memory linear,
    and no assumption is made about the range of the key values.
    """
    valid = jnp.asarray(valid, bool)
    m = valid.shape[0]
    keys = tuple(jnp.where(valid, jnp.asarray(k, jnp.int32), 0) for k in keys)
    # lexsort: the last key is the primary one; invalid rows sort last.
    order = jnp.lexsort(tuple(reversed(keys)) + (~valid,))
    sk = [k[order] for k in keys]
    sv = valid[order]
    new = jnp.zeros((m,), bool).at[0].set(True)
    for k in sk:
        new = new | jnp.concatenate([jnp.ones((1,), bool), k[1:] != k[:-1]])
    sorted_ids = jnp.cumsum(new.astype(jnp.int32)) - 1
    sorted_ids = jnp.where(sv, sorted_ids, m)
    ids = jnp.zeros((m,), jnp.int32).at[order].set(sorted_ids)
    return ids, m + 1


def group_moments(
    x: Array, group_ids: Array, *, unbiased: bool = True
) -> tuple[Array, Array, Array]:
    """Per-row group mean, variance and size: the statistics of the row's group, broadcast.

    ``mean[i] = mean_{j: g_j = g_i} x_j``; ``var`` is Bessel-corrected (``torch.std``'s
    default, as verl and TRL use) when ``unbiased``, computed in two passes (deviations from
    the mean) for accuracy; ``count[i]`` is the size of row i's group. A group of one has
    variance 0 (torch would give NaN); estimators decide their own singleton convention.

    Shapes: ``x [B]`` float, ``group_ids int[B]`` -> three float32 ``[B]`` arrays.
    """
    x = jnp.asarray(x, jnp.float32)
    idx = group_index(group_ids)
    if x.shape != idx.shape:
        raise ValueError(f"x has shape {x.shape} but group_ids has {idx.shape}; both must be [B]")
    b = x.shape[0]
    count = jax.ops.segment_sum(jnp.ones_like(x), idx, b)
    mean = jax.ops.segment_sum(x, idx, b) / jnp.maximum(count, 1.0)
    dev2 = jnp.square(x - mean[idx])
    ss = jax.ops.segment_sum(dev2, idx, b)
    denom = jnp.maximum(count - 1.0, 1.0) if unbiased else jnp.maximum(count, 1.0)
    var = jnp.where(count > 1, ss / denom, 0.0)
    return mean[idx], var[idx], count[idx]
