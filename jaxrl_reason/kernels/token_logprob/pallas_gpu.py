"""GPU Pallas path (Triton lowering), ``interpret=True`` on CPU for tests.

Triton constraints honoured here (measured on an H100, see ``docs/performance.md``, and
``jax/_src/pallas/triton/lowering.py``): every load/store and every ``dot`` operand has a
power-of-two size and each ``dot`` dimension is at least 16. The hidden axis is therefore
sliced into ``bd``-wide pieces (896 = 7 x 128, 576 = 9 x 64) instead of loaded whole, and
padded to a multiple of 16 when it is not one already. Kernels: see ``_pallas``.
"""

from __future__ import annotations

import dataclasses

import jax
from jax import lax

from jaxrl_reason.kernels.token_logprob import _common, _pallas


@dataclasses.dataclass(frozen=True)
class GpuBlocks:
    """Block sizes (powers of two >= 16) and Triton launch settings."""

    block_n: int = 64
    block_v: int = 128
    max_block_d: int = 128
    backward_chunk: int = 1024  # tokens per backward chunk: dlogits buffer is chunk x V
    num_warps: int = 4
    num_stages: int = 2

    def __post_init__(self):
        for name in ("block_n", "block_v", "max_block_d"):
            v = getattr(self, name)
            if v < 16 or v & (v - 1):
                raise ValueError(f"GpuBlocks.{name} must be a power of two >= 16; got {v}.")
        if self.backward_chunk % self.block_n:
            raise ValueError(
                f"GpuBlocks.backward_chunk ({self.backward_chunk}) must be a multiple of "
                f"block_n ({self.block_n})."
            )


def block_d_for(d: int, max_block_d: int = 128) -> int:
    """Largest power of two in [16, max_block_d] dividing ``d`` rounded up to 16."""
    dp = _pallas.round_up(d, 16)
    bd = max_block_d
    while dp % bd:
        bd //= 2
    return bd


def tiling(n: int, d: int, blocks: GpuBlocks, *, interpret: bool | None = None) -> _pallas.Tiling:
    if interpret is None:
        interpret = jax.default_backend() == "cpu"
    from jax.experimental.pallas import triton as pltriton

    bn = min(blocks.block_n, max(16, 1 << (max(n, 1) - 1).bit_length()))
    nc = min(blocks.backward_chunk, _pallas.round_up(n, bn))
    return _pallas.Tiling(
        bn=bn,
        bv=blocks.block_v,
        bd=block_d_for(d, blocks.max_block_d),
        nc=_pallas.round_up(nc, bn),
        interpret=interpret,
        compiler_params=None
        if interpret
        else pltriton.CompilerParams(num_warps=blocks.num_warps, num_stages=blocks.num_stages),
        precision=None,
    )


def _precision(dtype):
    # float32 inputs: full-precision dots (TF32 would miss the 1e-5 tolerance).
    return lax.Precision.HIGHEST if dtype == jax.numpy.float32 else None


def fwd(h, w, labels, plan: _common.Plan) -> _common.Stats:
    tl = dataclasses.replace(tiling(*h.shape, plan.options), precision=_precision(h.dtype))
    return _pallas.forward_stats(h, w, labels, tl=tl, inv_temp=plan.inv_temp)


def bwd(h, w, labels, lse, ez, g_lp, g_ent, g_sc, plan: _common.Plan):
    tl = dataclasses.replace(tiling(*h.shape, plan.options), precision=_precision(h.dtype))
    return _pallas.backward(h, w, labels, lse, ez, g_lp, g_ent, g_sc, tl=tl, inv_temp=plan.inv_temp)


def plan(temperature: float, with_sc: bool, blocks: GpuBlocks | None = None) -> _common.Plan:
    """The GPU :class:`~._common.Plan` (default :class:`GpuBlocks`)."""
    return _common.Plan(fwd, bwd, float(temperature), bool(with_sc), blocks or GpuBlocks())
