"""TPU Pallas path (Mosaic), ``interpret=True`` on CPU for tests.

Same kernels as the GPU path (``_pallas``) with TPU tiling: blocks are ``(8k, 128m)`` aligned,
the hidden axis is loaded whole (one MXU dot per tile; a block may span a full array axis),
per-token vectors travel as ``[N, 1]`` columns, and both grid axes are ``parallel`` so Mosaic
may split them across TensorCores.
"""

from __future__ import annotations

import dataclasses

import jax

from jaxrl_reason.kernels.token_logprob import _common, _pallas


@dataclasses.dataclass(frozen=True)
class TpuBlocks:
    """Block sizes: ``block_n`` a multiple of 8, ``block_v`` a multiple of 128."""

    block_n: int = 256
    block_v: int = 512
    backward_chunk: int = 1024

    def __post_init__(self):
        if self.block_n % 8 or self.block_v % 128:
            raise ValueError(
                f"TpuBlocks needs block_n % 8 == 0 and block_v % 128 == 0; got "
                f"block_n={self.block_n}, block_v={self.block_v}."
            )
        if self.backward_chunk % self.block_n:
            raise ValueError(
                f"TpuBlocks.backward_chunk ({self.backward_chunk}) must be a multiple of "
                f"block_n ({self.block_n})."
            )


def tiling(n: int, d: int, blocks: TpuBlocks, *, interpret: bool | None = None) -> _pallas.Tiling:
    if interpret is None:
        interpret = jax.default_backend() != "tpu"
    from jax.experimental.pallas import tpu as pltpu

    bn = min(blocks.block_n, _pallas.round_up(n, 8))
    nc = _pallas.round_up(min(blocks.backward_chunk, _pallas.round_up(n, bn)), bn)
    return _pallas.Tiling(
        bn=bn,
        bv=blocks.block_v,
        bd=d,
        nc=nc,
        interpret=interpret,
        compiler_params=None
        if interpret
        else pltpu.CompilerParams(dimension_semantics=("parallel", "parallel")),
        precision=jax.lax.Precision.HIGHEST,
    )


def fwd(h, w, labels, plan: _common.Plan) -> _common.Stats:
    tl = tiling(*h.shape, plan.options)
    return _pallas.forward_stats(h, w, labels, tl=tl, inv_temp=plan.inv_temp)


def bwd(h, w, labels, lse, ez, g_lp, g_ent, g_sc, plan: _common.Plan):
    tl = tiling(*h.shape, plan.options)
    return _pallas.backward(h, w, labels, lse, ez, g_lp, g_ent, g_sc, tl=tl, inv_temp=plan.inv_temp)


def plan(temperature: float, with_sc: bool, blocks: TpuBlocks | None = None) -> _common.Plan:
    """The TPU :class:`~._common.Plan` (default :class:`TpuBlocks`)."""
    return _common.Plan(fwd, bwd, float(temperature), bool(with_sc), blocks or TpuBlocks())
