"""Pallas kernels shared by the GPU (Triton) and TPU (Mosaic) paths.

Design (after Levanter's ``fused_cross_entropy_loss``; Milakov & Gimelshein's online softmax):

* Forward: a parallel grid over ``(token block i, vocab block j)``. Program ``(i, j)`` forms
  the ``[bn, bv]`` logits tile ``h[i] @ W[:, j]`` (the hidden axis in ``bd``-wide slices so
  every Triton load is a power of two), and writes the tile's five streaming statistics
  (``_common.Stats``) to ``[num_v_blocks, N, 1]`` partials. XLA merges them (one small
  reduction of ``N * V / bv`` floats). No program waits on another, and Triton gets
  ``N/bn * V/bv`` programs to spread over the SMs.
* Backward: for a chunk of ``nc`` tokens at a time, a kernel on the same grid recomputes the
  logits tile and writes ``d loss / d logits`` in the input dtype; the two big products
  ``dh = dlogits @ W^T`` and ``dW += h^T @ dlogits`` run as ordinary XLA matmuls (cuBLAS /
  the MXU), which reach the matmul ceiling that a hand-written accumulation over the wide
  hidden axis (896 floats per row) would not. Peak memory is ``O(nc * V)``, set by ``nc``.

Every array is padded so blocks tile it exactly: the hidden axis with zeros (no effect on the
logits), the vocabulary with zero columns that ``valid`` masks out, and tokens with zero rows
whose outputs are dropped.
"""

from __future__ import annotations

import dataclasses
from functools import partial

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from jaxrl_reason.kernels.token_logprob import _common


@dataclasses.dataclass(frozen=True)
class Tiling:
    """Resolved block sizes and launch settings for one call (all static)."""

    bn: int  # tokens per block
    bv: int  # vocabulary columns per block
    bd: int  # hidden-axis slice per dot (== padded D when the backend takes the whole axis)
    nc: int  # tokens per backward chunk (a multiple of bn)
    interpret: bool
    compiler_params: object | None
    precision: object | None  # lax precision of the in-kernel dots (None: backend default)


def round_up(x: int, m: int) -> int:
    return -(-x // m) * m


def _pad(x, axis, size):
    extra = size - x.shape[axis]
    if extra == 0:
        return x
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, extra)
    return jnp.pad(x, widths)


def _logits_tile(h_ref, w_ref, tl: Tiling, inv_temp: float):
    """``[bn, bv]`` float32 scaled logits of the current blocks, ``bd`` hidden units a dot."""
    z = None
    for k in range(h_ref.shape[1] // tl.bd):
        hk = h_ref[:, pl.ds(k * tl.bd, tl.bd)]
        wk = w_ref[pl.ds(k * tl.bd, tl.bd), :]
        part = jnp.dot(hk, wk, preferred_element_type=jnp.float32, precision=tl.precision)
        z = part if z is None else z + part
    return z * inv_temp


def _columns(tl: Tiling, vocab: int):
    j = pl.program_id(1)
    cols = j * tl.bv + lax.broadcasted_iota(jnp.int32, (1, tl.bv), 1)
    return cols, cols < vocab


def _fwd_kernel(h_ref, w_ref, y_ref, m_ref, l_ref, t_ref, s_ref, zy_ref, *, tl, vocab, inv_temp):
    z = _logits_tile(h_ref, w_ref, tl, inv_temp)
    cols, valid = _columns(tl, vocab)
    st = _common.tile_stats(z, cols, valid, y_ref[...])
    for ref, val in zip((m_ref, l_ref, t_ref, s_ref, zy_ref), st, strict=True):
        ref[...] = val


def _dlogits_kernel(
    h_ref, w_ref, y_ref, lse_ref, ez_ref, glp_ref, gent_ref, *rest, tl, vocab, inv_temp, with_sc
):
    if with_sc:
        gsc_ref, out_ref = rest
        g_sc = gsc_ref[...]
    else:
        (out_ref,) = rest
        g_sc = None
    z = _logits_tile(h_ref, w_ref, tl, inv_temp)
    cols, valid = _columns(tl, vocab)
    dl = _common.tile_dlogits(
        z,
        cols,
        valid,
        y_ref[...],
        lse_ref[...],
        ez_ref[...],
        glp_ref[...],
        gent_ref[...],
        g_sc,
        vocab=vocab,
        inv_temp=inv_temp,
    )
    out_ref[...] = dl.astype(out_ref.dtype)


def _specs(tl: Tiling, dp: int):
    h_spec = pl.BlockSpec((tl.bn, dp), lambda i, j: (i, 0))
    w_spec = pl.BlockSpec((dp, tl.bv), lambda i, j: (0, j))
    col_spec = pl.BlockSpec((tl.bn, 1), lambda i, j: (i, 0))
    return h_spec, w_spec, col_spec


def _prepare(h, w, labels, tl: Tiling):
    """Pad to whole blocks: ``h [Np, Dp]``, ``w [Dp, Vp]``, ``labels int32[Np, 1]``."""
    n, d = h.shape
    dp = round_up(d, tl.bd)
    np_ = round_up(n, tl.nc)
    vp = round_up(w.shape[1], tl.bv)
    hp = _pad(_pad(h, 1, dp), 0, np_)
    wp = _pad(_pad(w, 0, dp), 1, vp)
    yp = _pad(labels.astype(jnp.int32), 0, np_)[:, None]
    return hp, wp, yp


def forward_stats(h, w, labels, *, tl: Tiling, inv_temp: float) -> _common.Stats:
    """Merged streaming statistics ``[N]`` (see module docstring)."""
    n, vocab = h.shape[0], w.shape[1]
    hp, wp, yp = _prepare(h, w, labels, tl)
    np_, dp = hp.shape
    nv = wp.shape[1] // tl.bv
    h_spec, w_spec, col_spec = _specs(tl, dp)
    part_spec = pl.BlockSpec((None, tl.bn, 1), lambda i, j: (j, i, 0))
    part_shape = jax.ShapeDtypeStruct((nv, np_, 1), jnp.float32)
    parts = pl.pallas_call(
        partial(_fwd_kernel, tl=tl, vocab=vocab, inv_temp=inv_temp),
        grid=(np_ // tl.bn, nv),
        in_specs=[h_spec, w_spec, col_spec],
        out_specs=[part_spec] * 5,
        out_shape=[part_shape] * 5,
        interpret=tl.interpret,
        compiler_params=tl.compiler_params,
        name="token_logprob_fwd",
    )(hp, wp, yp)
    stats = _common.reduce_partials(_common.Stats(*(p[:, :, 0] for p in parts)))
    return _common.Stats(*(x[:n] for x in stats))


def dlogits_chunk(hc, wp, yc, per_token, *, tl: Tiling, vocab: int, inv_temp: float, with_sc):
    """``d loss / d logits`` for one padded chunk of ``nc`` tokens: ``[nc, Vp]`` in ``wp.dtype``."""
    nc, dp = hc.shape
    nv = wp.shape[1] // tl.bv
    h_spec, w_spec, col_spec = _specs(tl, dp)
    return pl.pallas_call(
        partial(_dlogits_kernel, tl=tl, vocab=vocab, inv_temp=inv_temp, with_sc=with_sc),
        grid=(nc // tl.bn, nv),
        in_specs=[h_spec, w_spec, col_spec] + [col_spec] * len(per_token),
        out_specs=pl.BlockSpec((tl.bn, tl.bv), lambda i, j: (i, j)),
        out_shape=jax.ShapeDtypeStruct((nc, wp.shape[1]), wp.dtype),
        interpret=tl.interpret,
        compiler_params=tl.compiler_params,
        name="token_logprob_dlogits",
    )(hc, wp, yc, *per_token)


def backward(h, w, labels, lse, ez, g_lp, g_ent, g_sc, *, tl: Tiling, inv_temp: float):
    """``(dh [N, D] f32, dW [D, V] f32)``: a scan over token chunks of ``tl.nc``."""
    n, d = h.shape
    vocab = w.shape[1]
    hp, wp, yp = _prepare(h, w, labels, tl)
    np_, dp = hp.shape
    n_chunks = np_ // tl.nc
    per_token = [g for g in (lse, ez, g_lp, g_ent, g_sc) if g is not None]
    # Padded tokens get zero cotangents, so they add nothing to dW.
    per_token = [_pad(x.astype(jnp.float32), 0, np_)[:, None] for x in per_token]

    def chunks(x):
        return x.reshape(n_chunks, tl.nc, *x.shape[1:])

    def body(dw, xs):
        hc, yc, *pt = xs
        dl = dlogits_chunk(
            hc, wp, yc, pt, tl=tl, vocab=vocab, inv_temp=inv_temp, with_sc=g_sc is not None
        )
        dh_c = jnp.dot(dl, wp.T, preferred_element_type=jnp.float32)
        dw = dw + lax.dot_general(
            hc, dl, (((0,), (0,)), ((), ())), preferred_element_type=jnp.float32
        )
        return dw, dh_c

    dw, dh = lax.scan(
        body, jnp.zeros(wp.shape, jnp.float32), (chunks(hp), chunks(yp), *map(chunks, per_token))
    )
    return dh.reshape(np_, dp)[:n, :d], dw[:d, :vocab]
