"""Pallas advantage scans: one kernel, a sequential loop over time inside each program.

Arrays go time-major (``[T, B]``) so a time step is one ``(1, bb)`` row: a power-of-two load
for Triton and a sublane slice (lanes = sequences) for Mosaic TPU. The grid runs over blocks
of ``bb`` sequences; each program keeps the two carries (next unmasked value, running
advantage) in registers / vregs for all ``T`` steps, so the whole scan is one launch that
reads and writes each element once (an XLA ``while`` loop pays a launch per step on GPU).
Semantics: ``reference.py``.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl


def _gae_kernel(r_ref, v_ref, m_ref, adv_ref, ret_ref, *, gamma, lam, steps):
    bb = r_ref.shape[1]

    def body(k, carry):
        nextv, last = carry
        t = steps - 1 - k
        r = r_ref[pl.ds(t, 1), :]
        v = v_ref[pl.ds(t, 1), :]
        keep = m_ref[pl.ds(t, 1), :] > 0
        a = r + gamma * nextv - v + (gamma * lam) * last
        nextv = jnp.where(keep, v, nextv)
        last = jnp.where(keep, a, last)
        adv_ref[pl.ds(t, 1), :] = jnp.where(keep, a, 0.0)
        ret_ref[pl.ds(t, 1), :] = jnp.where(keep, a + v, 0.0)
        return nextv, last

    zeros = jnp.zeros((1, bb), jnp.float32)
    lax.fori_loop(0, steps, body, (zeros, zeros))


def _block(backend: str, b: int) -> int:
    if backend == "tpu":
        return 128  # one vreg of lanes
    return min(128, max(16, 1 << (max(b, 1) - 1).bit_length()))  # Triton: a power of two


def gae(rewards, values, mask, *, gamma, lam, interpret=None):
    backend = jax.default_backend()
    if interpret is None:
        interpret = backend not in ("gpu", "tpu")
    b, steps = rewards.shape
    bb = _block(backend, b)
    bp = -(-b // bb) * bb

    def tm(x):  # [B, T] -> padded time-major [T, Bp] float32
        return jnp.pad(x.astype(jnp.float32).T, ((0, 0), (0, bp - b)))

    spec = pl.BlockSpec((steps, bb), lambda i: (0, i))
    out = jax.ShapeDtypeStruct((steps, bp), jnp.float32)
    params = None
    if not interpret and backend == "tpu":
        from jax.experimental.pallas import tpu as pltpu

        params = pltpu.CompilerParams(dimension_semantics=("parallel",))
    adv, ret = pl.pallas_call(
        partial(_gae_kernel, gamma=float(gamma), lam=float(lam), steps=steps),
        grid=(bp // bb,),
        in_specs=[spec] * 3,
        out_specs=[spec] * 2,
        out_shape=[out, out],
        interpret=interpret,
        compiler_params=params,
        name="gae_scan",
    )(tm(rewards), tm(values), tm(mask))
    return adv[:, :b].T, ret[:, :b].T


def discounted_cumsum(x, mask, *, gamma, interpret=None):
    # With V = 0 and lam = 1 the GAE recursion is exactly the skip-masked discounted sum.
    adv, _ = gae(x, jnp.zeros_like(x, jnp.float32), mask, gamma=gamma, lam=1.0, interpret=interpret)
    return adv
