"""Key/value cache for incremental decoding (a pytree; see docs/contracts.md)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from jaxrl_reason.models.config import ModelConfig


@struct.dataclass
class KVCache:
    """Per-layer keys and values of every token seen so far.

    Attributes:
      k, v: ``[L, B, S_max, KVH, Dh]`` keys (after RoPE) and values, compute dtype.
      key_mask: ``bool[B, S_max]``, True on slots holding a real (non-padding) token.
      index: ``int32[]``, the next free slot, shared by all rows. A model call with ``T``
        tokens writes slots ``[index, index + T)`` and returns the cache with ``index + T``.
    """

    k: jax.Array
    v: jax.Array
    key_mask: jax.Array
    index: jax.Array

    @classmethod
    def init(
        cls, cfg: ModelConfig, batch: int, max_len: int, dtype: str | jnp.dtype | None = None
    ) -> KVCache:
        """An empty cache for ``batch`` rows and ``max_len`` slots (dtype defaults to cfg.dtype)."""
        if batch <= 0 or max_len <= 0:
            raise ValueError(f"KVCache.init: batch={batch} and max_len={max_len} must be > 0.")
        dtype = jnp.dtype(dtype or cfg.dtype)
        shape = (cfg.num_layers, batch, max_len, cfg.num_kv_heads, cfg.head_dim)
        return cls(
            k=jnp.zeros(shape, dtype),
            v=jnp.zeros(shape, dtype),
            key_mask=jnp.zeros((batch, max_len), jnp.bool_),
            index=jnp.zeros((), jnp.int32),
        )

    @property
    def max_len(self) -> int:
        """S_max, the number of slots."""
        return self.k.shape[2]
