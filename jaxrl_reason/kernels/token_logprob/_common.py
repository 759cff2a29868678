"""Pieces shared by the tiled implementations: streaming statistics, their merge, the
per-tile gradient of the outputs w.r.t. the logits, and the generic ``jax.custom_vjp``.

Notation (per token): ``z_j = (h . W[:, j]) / T`` for ``j < V``; ``lse = log sum_j e^{z_j}``;
``p_j = e^{z_j - lse}``; ``E = sum_j p_j z_j``.

* ``logprob = z_y - lse``
* ``entropy = lse - E``
* ``self_certainty = KL(U || p) = lse - (1/V) sum_j z_j - log V``

A tile over the vocabulary contributes five running statistics, merged like the online
softmax of FlashAttention (Milakov & Gimelshein 2018, "Online normalizer calculation for
softmax"): ``m`` (max z), ``l = sum e^{z-m}``, ``t = sum e^{z-m} z``, ``zsum = sum z`` and
``zy = z_label``. Gradients w.r.t. ``z_j`` (cotangents ``g_lp, g_ent, g_sc``):

* ``d logprob / d z_j = [j = y] - p_j``
* ``d entropy / d z_j = p_j (E - z_j)``
* ``d self_certainty / d z_j = p_j - 1/V``

and ``d/d logits = (d/d z) / T``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp


class Stats(NamedTuple):
    """Streaming softmax statistics per token, all float32 ``[N]``."""

    m: jax.Array
    l: jax.Array  # noqa: E741 (the conventional name of the online-softmax normaliser)
    t: jax.Array
    zsum: jax.Array
    zy: jax.Array


def init_stats(n: int) -> Stats:
    zeros = jnp.zeros((n,), jnp.float32)
    return Stats(jnp.full((n,), -jnp.inf, jnp.float32), zeros, zeros, zeros, zeros)


def tile_stats(z: jax.Array, cols: jax.Array, valid: jax.Array, labels: jax.Array) -> Stats:
    """Statistics of one ``[n, c]`` tile of scaled logits, each shaped ``[n, 1]``.

    Arguments are broadcast-ready 2-D arrays (the form Pallas TPU and Triton both lower):
    ``cols int32[1, c]`` are the global vocabulary ids of the tile's columns, ``valid
    bool[1, c]`` marks the ones that count (padding and columns already seen are excluded) and
    ``labels int32[n, 1]``. Every tile holds at least one valid column, so ``m`` is finite.
    """
    zm = jnp.where(valid, z, -jnp.inf)
    m = jnp.max(zm, axis=1, keepdims=True)
    e = jnp.exp(zm - m)
    zv = jnp.where(valid, z, 0.0)
    hit = (cols == labels) & valid
    return Stats(
        m=m,
        l=jnp.sum(e, axis=1, keepdims=True),
        t=jnp.sum(e * zv, axis=1, keepdims=True),
        zsum=jnp.sum(zv, axis=1, keepdims=True),
        zy=jnp.sum(jnp.where(hit, z, 0.0), axis=1, keepdims=True),
    )


def merge_stats(a: Stats, b: Stats) -> Stats:
    """Combine the statistics of two disjoint sets of columns (associative, commutative)."""
    m = jnp.maximum(a.m, b.m)
    # exp(-inf - finite) = 0 handles the empty initial state without NaNs.
    sa = jnp.exp(a.m - m)
    sb = jnp.exp(b.m - m)
    return Stats(m, a.l * sa + b.l * sb, a.t * sa + b.t * sb, a.zsum + b.zsum, a.zy + b.zy)


def reduce_partials(p: Stats) -> Stats:
    """Merge per-tile partials stacked on axis 0 (``[num_tiles, N]`` each) into ``[N]``."""
    m = jnp.max(p.m, axis=0)
    s = jnp.exp(p.m - m[None, :])
    return Stats(
        m,
        jnp.sum(p.l * s, axis=0),
        jnp.sum(p.t * s, axis=0),
        jnp.sum(p.zsum, axis=0),
        jnp.sum(p.zy, axis=0),
    )


def finalize(stats: Stats, vocab: int) -> tuple[jax.Array, ...]:
    """``(logprob, entropy, self_certainty, lse, expected_z)`` from merged statistics."""
    lse = stats.m + jnp.log(stats.l)
    ez = stats.t / stats.l
    lp = stats.zy - lse
    ent = lse - ez
    sc = lse - stats.zsum / vocab - math.log(vocab)
    return lp, ent, sc, lse, ez


def tile_dlogits(
    z: jax.Array,
    cols: jax.Array,
    valid: jax.Array,
    labels: jax.Array,
    lse: jax.Array,
    ez: jax.Array,
    g_lp: jax.Array,
    g_ent: jax.Array,
    g_sc: jax.Array | None,
    *,
    vocab: int,
    inv_temp: float,
) -> jax.Array:
    """Gradient w.r.t. the *unscaled* logits of one ``[n, c]`` tile, float32, 0 off ``valid``.

    ``cols``/``valid`` are ``[1, c]``; ``labels`` and the per-token ``lse, ez, g_*`` are
    ``[n, 1]`` (see :func:`tile_stats`).
    """
    p = jnp.where(valid, jnp.exp(z - lse), 0.0)
    dz = p * (g_ent * (ez - z) - g_lp)
    hit = (cols == labels) & valid
    dz = dz + jnp.where(hit, g_lp, 0.0)
    if g_sc is not None:
        dz = dz + g_sc * (p - jnp.where(valid, 1.0 / vocab, 0.0))
    return dz * inv_temp


@dataclasses.dataclass(frozen=True)
class Plan:
    """Static description of one implementation call (hashable: a ``nondiff_argnums`` arg).

    ``fwd(h, w, labels, plan) -> Stats`` and
    ``bwd(h, w, labels, lse, ez, g_lp, g_ent, g_sc, plan) -> (dh, dw)`` work on 2-D ``h``.
    """

    fwd: Callable[..., Stats]
    bwd: Callable[..., tuple[jax.Array, jax.Array]]
    temperature: float
    with_sc: bool
    options: Any = None

    @property
    def inv_temp(self) -> float:
        return 1.0 / self.temperature


@partial(jax.custom_vjp, nondiff_argnums=(3,))
def fused(h: jax.Array, w: jax.Array, labels: jax.Array, plan: Plan):
    """``(logprob, entropy, self_certainty)`` float32 ``[N]`` for 2-D ``h [N, D]``."""
    out, _ = _fused_fwd(h, w, labels, plan)
    return out


def _fused_fwd(h, w, labels, plan):
    stats = plan.fwd(h, w, labels, plan)
    lp, ent, sc, lse, ez = finalize(stats, w.shape[1])
    # Only O(N) residuals: the logits are recomputed tile by tile in the backward pass.
    return (lp, ent, sc), (h, w, labels, lse, ez)


def _fused_bwd(plan, res, g):
    h, w, labels, lse, ez = res
    g_lp, g_ent, g_sc = (x.astype(jnp.float32) for x in g)
    dh, dw = plan.bwd(h, w, labels, lse, ez, g_lp, g_ent, g_sc if plan.with_sc else None, plan)
    return dh.astype(h.dtype), dw.astype(w.dtype), None


fused.defvjp(_fused_fwd, _fused_bwd)
