"""Chunked XLA implementation: a ``lax.scan`` over vocabulary chunks with an online logsumexp.

Peak extra memory is a few ``[N, chunk]`` float32 tiles plus the gradient buffers; the
``[N, V]`` logits never exist. The backward pass recomputes each chunk's logits (one extra
``N x D x chunk`` matmul per chunk) instead of storing them. This is the CPU default.

The last chunk is not padded (padding ``lm_head`` would copy it): its start is clamped to
``V - chunk`` and the columns it shares with the previous chunk are masked out.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from jaxrl_reason.kernels.token_logprob import _common

# Tuned on the 2-core CPU with benchmarks/token_logprob.py (docs/performance.md).
DEFAULT_CHUNK = 2048


def _geometry(vocab: int, chunk: int | None) -> tuple[int, int]:
    c = min(chunk or DEFAULT_CHUNK, vocab)
    return c, -(-vocab // c)


def _chunk(w, i, c, vocab):
    start = jnp.minimum(i * c, vocab - c)
    w_c = lax.dynamic_slice_in_dim(w, start, c, axis=1)
    cols = start + jnp.arange(c, dtype=jnp.int32)[None, :]
    return start, w_c, cols, cols >= i * c


def _logits(h, w_c, inv_temp):
    return jnp.dot(h, w_c, preferred_element_type=jnp.float32) * inv_temp


def fwd(h, w, labels, plan: _common.Plan) -> _common.Stats:
    vocab = w.shape[1]
    c, n_chunks = _geometry(vocab, plan.options)

    def body(stats, i):
        _, w_c, cols, valid = _chunk(w, i, c, vocab)
        z = _logits(h, w_c, plan.inv_temp)
        tile = _common.tile_stats(z, cols, valid, labels[:, None])
        return _common.merge_stats(stats, _common.Stats(*(x[:, 0] for x in tile))), None

    stats, _ = lax.scan(body, _common.init_stats(h.shape[0]), jnp.arange(n_chunks))
    return stats


def bwd(h, w, labels, lse, ez, g_lp, g_ent, g_sc, plan: _common.Plan):
    vocab = w.shape[1]
    c, n_chunks = _geometry(vocab, plan.options)

    col = [None if x is None else x[:, None] for x in (labels, lse, ez, g_lp, g_ent, g_sc)]

    def body(carry, i):
        dh, dw = carry
        start, w_c, cols, valid = _chunk(w, i, c, vocab)
        z = _logits(h, w_c, plan.inv_temp)
        dl = _common.tile_dlogits(z, cols, valid, *col, vocab=vocab, inv_temp=plan.inv_temp)
        # Matmuls run in the input dtype with float32 accumulation, like the reference's VJP.
        dl = dl.astype(w.dtype)
        dh = dh + jnp.dot(dl, w_c.T, preferred_element_type=jnp.float32)
        dw_c = lax.dot_general(h, dl, (((0,), (0,)), ((), ())), preferred_element_type=jnp.float32)
        # Columns shared with the previous chunk got a zero gradient here, so add, not set.
        old = lax.dynamic_slice_in_dim(dw, start, c, axis=1)
        dw = lax.dynamic_update_slice_in_dim(dw, old + dw_c.astype(dw.dtype), start, axis=1)
        return (dh, dw), None

    init = (jnp.zeros(h.shape, jnp.float32), jnp.zeros(w.shape, w.dtype))
    (dh, dw), _ = lax.scan(body, init, jnp.arange(n_chunks))
    return dh, dw


def plan(temperature: float, with_sc: bool, chunk: int | None = None) -> _common.Plan:
    """The XLA :class:`~._common.Plan`; ``chunk`` columns per step (default ``DEFAULT_CHUNK``)."""
    return _common.Plan(fwd, bwd, float(temperature), bool(with_sc), chunk)
