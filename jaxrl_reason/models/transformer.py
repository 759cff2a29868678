"""A Flax NNX decoder for the Llama / Qwen2 / SmolLM families.

Pre-norm decoder (Touvron et al. 2023, "LLaMA"): token embedding, ``L`` identical layers of
``x + Attn(RMSNorm(x))`` then ``x + SwiGLU(RMSNorm(x))``, a final RMSNorm and a (tied or
untied) LM head. Attention is grouped-query (Ainslie et al. 2023) with rotary position
embeddings (Su et al. 2021) in the Hugging Face "rotate-half" convention.

The ``L`` layers are stored stacked (every layer parameter has a leading ``[L]`` axis) and
applied with ``jax.lax.scan``, so tracing and compile time do not grow with depth. Every
parameter carries logical axis names (NNX metadata ``out_sharding``, e.g.
``("layers", "embed", "heads", "head_dim")``) drawn from
``{"layers", "vocab", "embed", "heads", "kv_heads", "head_dim", "mlp"}``; a sharding layer maps
them to mesh axes (``nnx.get_partition_spec`` under ``nn.logical_axis_rules``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxrl_reason.models.cache import KVCache
from jaxrl_reason.models.config import ModelConfig

# Names and logical axes of the stacked per-layer parameters. Shapes use
# D=hidden, H=heads, K=kv heads, Dh=head_dim, F=intermediate.
LAYER_AXES: dict[str, tuple[str, ...]] = {
    "attn_norm": ("layers", "embed"),  # [L, D]
    "q_proj": ("layers", "embed", "heads", "head_dim"),  # [L, D, H, Dh]
    "k_proj": ("layers", "embed", "kv_heads", "head_dim"),  # [L, D, K, Dh]
    "v_proj": ("layers", "embed", "kv_heads", "head_dim"),  # [L, D, K, Dh]
    "q_bias": ("layers", "heads", "head_dim"),  # [L, H, Dh] (attention_bias only)
    "k_bias": ("layers", "kv_heads", "head_dim"),  # [L, K, Dh]
    "v_bias": ("layers", "kv_heads", "head_dim"),  # [L, K, Dh]
    "o_proj": ("layers", "heads", "head_dim", "embed"),  # [L, H, Dh, D]
    "mlp_norm": ("layers", "embed"),  # [L, D]
    "gate_proj": ("layers", "embed", "mlp"),  # [L, D, F]
    "up_proj": ("layers", "embed", "mlp"),  # [L, D, F]
    "down_proj": ("layers", "mlp", "embed"),  # [L, F, D]
}
BIAS_NAMES = ("q_bias", "k_bias", "v_bias")


def layer_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Shapes of the stacked layer parameters present for ``cfg`` (biases only if enabled)."""
    L, D, H, K, Dh, F = (
        cfg.num_layers,
        cfg.hidden_size,
        cfg.num_heads,
        cfg.num_kv_heads,
        cfg.head_dim,
        cfg.intermediate_size,
    )
    shapes = {
        "attn_norm": (L, D),
        "q_proj": (L, D, H, Dh),
        "k_proj": (L, D, K, Dh),
        "v_proj": (L, D, K, Dh),
        "q_bias": (L, H, Dh),
        "k_bias": (L, K, Dh),
        "v_bias": (L, K, Dh),
        "o_proj": (L, H, Dh, D),
        "mlp_norm": (L, D),
        "gate_proj": (L, D, F),
        "up_proj": (L, D, F),
        "down_proj": (L, F, D),
    }
    if not cfg.attention_bias:
        for name in BIAS_NAMES:
            del shapes[name]
    return shapes


def _param(value: jax.Array, axes: tuple[str, ...]) -> nnx.Param:
    # eager_sharding=False: record the logical names only; placing arrays on a mesh is the
    # sharding layer's job (and must work with no mesh at all, e.g. in CPU tests).
    return nnx.Param(value, out_sharding=axes, eager_sharding=False)


def rms_norm(x: jax.Array, weight: jax.Array, eps: float) -> jax.Array:
    """RMSNorm (Zhang & Sennrich 2019) as HF Llama computes it: statistics in float32.

    ``x [..., D]`` any float dtype, ``weight [D]``; returns ``x``'s dtype.
    """
    x32 = x.astype(jnp.float32)
    normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
    return weight.astype(x.dtype) * normed.astype(x.dtype)


def rope_cos_sin(positions: jax.Array, head_dim: int, theta: float) -> tuple[jax.Array, jax.Array]:
    """RoPE tables in the HF rotate-half layout.

    ``positions int32[B, T]`` -> ``cos, sin float32[B, T, Dh]`` where frequency ``i`` occupies
    columns ``i`` and ``i + Dh/2`` (``inv_freq_i = theta^(-2i/Dh)``).
    """
    inv_freq = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
    freqs = positions.astype(jnp.float32)[..., None] * inv_freq
    emb = jnp.concatenate([freqs, freqs], axis=-1)
    return jnp.cos(emb), jnp.sin(emb)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """``x [B, T, N, Dh]`` rotated: ``x * cos + rotate_half(x) * sin`` (in float32)."""
    x32 = x.astype(jnp.float32)
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x32[..., half:], x32[..., :half]], axis=-1)
    out = x32 * cos[:, :, None, :] + rotated * sin[:, :, None, :]
    return out.astype(x.dtype)


def attention(q: jax.Array, k: jax.Array, v: jax.Array, allowed: jax.Array) -> jax.Array:
    """Grouped-query softmax attention with a boolean mask.

    Args:
      q: ``[B, T, H, Dh]`` queries (RoPE applied).
      k, v: ``[B, S, K, Dh]`` keys (RoPE applied) and values, ``H % K == 0``; query head ``h``
        reads kv head ``h // (H / K)`` (HF ``repeat_kv`` order).
      allowed: ``bool[B, T, S]``, True where query ``t`` may attend to key ``s``.

    Returns:
      ``[B, T, H, Dh]`` in ``q``'s dtype. Scores and softmax are float32. A query with no
      allowed key (e.g. a left-padding position) gets exactly 0 instead of NaN.
    """
    B, T, H, Dh = q.shape
    K = k.shape[2]
    qg = q.reshape(B, T, K, H // K, Dh)
    scores = jnp.einsum("btkgd,bskd->bkgts", qg, k, preferred_element_type=jnp.float32)
    scores = scores * (Dh**-0.5)
    mask = allowed[:, None, None, :, :]
    # A finite fill keeps fully masked rows finite; zeroing them afterwards makes them 0.
    scores = jnp.where(mask, scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1)
    probs = jnp.where(mask, probs, 0.0).astype(v.dtype)
    out = jnp.einsum("bkgts,bskd->btkgd", probs, v, preferred_element_type=jnp.float32)
    return out.reshape(B, T, H, Dh).astype(q.dtype)


def _qkv(cfg: ModelConfig, p: dict[str, jax.Array], h: jax.Array, cos, sin):
    dt = h.dtype
    q = jnp.einsum("btd,dhk->bthk", h, p["q_proj"].astype(dt))
    k = jnp.einsum("btd,dhk->bthk", h, p["k_proj"].astype(dt))
    v = jnp.einsum("btd,dhk->bthk", h, p["v_proj"].astype(dt))
    if cfg.attention_bias:
        q = q + p["q_bias"].astype(dt)
        k = k + p["k_bias"].astype(dt)
        v = v + p["v_bias"].astype(dt)
    return apply_rope(q, cos, sin), apply_rope(k, cos, sin), v


def _attn_out_and_mlp(cfg: ModelConfig, p: dict[str, jax.Array], x: jax.Array, attn: jax.Array):
    dt = x.dtype
    x = x + jnp.einsum("bthk,hkd->btd", attn, p["o_proj"].astype(dt))
    h = rms_norm(x, p["mlp_norm"], cfg.rms_norm_eps)
    gate = jnp.einsum("btd,df->btf", h, p["gate_proj"].astype(dt))
    up = jnp.einsum("btd,df->btf", h, p["up_proj"].astype(dt))
    return x + jnp.einsum("btf,fd->btd", jax.nn.silu(gate) * up, p["down_proj"].astype(dt))


def decoder_layer(
    cfg: ModelConfig,
    p: dict[str, jax.Array],
    x: jax.Array,
    cos: jax.Array,
    sin: jax.Array,
    allowed: jax.Array,
) -> jax.Array:
    """One decoder layer without a cache (``p`` holds one layer's slices, no ``[L]`` axis).

    ``x [B, T, D]`` compute dtype; ``allowed bool[B, T, T]``. Returns ``[B, T, D]``.
    """
    h = rms_norm(x, p["attn_norm"], cfg.rms_norm_eps)
    q, k, v = _qkv(cfg, p, h, cos, sin)
    return _attn_out_and_mlp(cfg, p, x, attention(q, k, v, allowed))


#: ``Transformer.__call__(remat=...)``: the ``jax.checkpoint`` policy of each layer.
REMAT_POLICIES = {
    "none": lambda: None,
    "dots": lambda: jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "full": lambda: jax.checkpoint_policies.nothing_saveable,
}


class Transformer(nnx.Module):
    """Decoder-only language model; see the module docstring and docs/contracts.md.

    Parameters (param_dtype): ``embed [V, D]``, stacked layer parameters ``layers[name]``
    with shapes from :func:`layer_shapes`, ``final_norm [D]`` and, when untied,
    ``lm_head [D, V]``.
    """

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.config = cfg
        pdt = jnp.dtype(cfg.param_dtype)
        init = jax.nn.initializers.normal(stddev=0.02)
        self.embed = _param(
            init(rngs.params(), (cfg.vocab_size, cfg.hidden_size), pdt), ("vocab", "embed")
        )
        layers = {}
        for name, shape in layer_shapes(cfg).items():
            if name.endswith("norm"):
                value = jnp.ones(shape, pdt)
            elif name in BIAS_NAMES:
                value = jnp.zeros(shape, pdt)
            else:
                value = init(rngs.params(), shape, pdt)
            layers[name] = _param(value, LAYER_AXES[name])
        self.layers = nnx.Dict(layers)
        self.final_norm = _param(jnp.ones((cfg.hidden_size,), pdt), ("embed",))
        if not cfg.tie_word_embeddings:
            self.lm_head = _param(
                init(rngs.params(), (cfg.hidden_size, cfg.vocab_size), pdt), ("embed", "vocab")
            )
        else:
            self.lm_head = None

    def lm_head_weight(self) -> jax.Array:
        """The LM head ``[D, V]`` in param dtype (the embedding transposed when tied)."""
        if self.config.tie_word_embeddings:
            return self.embed[...].T
        return self.lm_head[...]

    def stacked_layer_params(self) -> dict[str, jax.Array]:
        """The stacked layer parameters as plain arrays ``{name: [L, ...]}``."""
        return {name: self.layers[name][...] for name in layer_shapes(self.config)}

    def per_layer_params(self) -> list[dict[str, jax.Array]]:
        """The layer parameters cut into ``L`` dicts ``{name: [...]}`` (copies: one buffer per
        layer and weight), for :meth:`__call__`'s ``layers`` (the sampler's CPU decode)."""
        stacked = self.stacked_layer_params()
        return [{k: v[i] for k, v in stacked.items()} for i in range(self.config.num_layers)]

    def __call__(
        self,
        tokens: jax.Array,
        *,
        positions: jax.Array | None = None,
        attention_mask: jax.Array | None = None,
        cache: KVCache | None = None,
        return_hidden: bool = False,
        frozen_layers: int = 0,
        remat: str = "none",
        layers: Sequence[dict[str, jax.Array]] | None = None,
    ) -> Any:
        """Run the decoder.

        Args:
          tokens: ``int32[B, T]``.
          positions: ``int32[B, T]`` RoPE positions. Default: ``max(prior + cumsum(mask) - 1,
            0)`` where ``prior`` is the number of real tokens already in the cache (0 without
            one), i.e. ``arange(T)`` for an unmasked call without a cache, and left-padded rows
            start at 0. Callers decoding with a cache may pass positions explicitly.
          attention_mask: ``bool[B, T]``, True on real tokens of this call (left padding
            False). Default all True.
          cache: a :class:`KVCache`; this call writes slots ``[index, index + T)``.
          return_hidden: return the final-normed hidden states ``[B, T, D]`` (compute dtype)
            instead of logits.
          frozen_layers: static ``k``: no gradient flows into (or through) the first ``k``
            layers or the embedding. The layer stack runs as two scans with a stop-gradient
            between them, so the backward pass only covers the last ``L - k`` layers (what
            makes "train the last layers" cheap, not just masked). Values are unchanged.
          remat: static; what the backward pass keeps of each layer without a cache
            (:data:`REMAT_POLICIES`): ``"none"`` every intermediate, ``"dots"`` only matmul
            outputs (norms, RoPE, SiLU and products are recomputed), ``"full"`` only the
            layer's input (the whole layer is recomputed). Values are unchanged.
          layers: with a cache only: :meth:`per_layer_params` (``L`` dicts of per-layer
            arrays) to run the stack as an unrolled Python loop over separate buffers instead
            of a scan over the stacked weights (XLA CPU copies a scanned layer's weight slice
            on every call). The same model: values agree with the scan to float32 rounding
            (a different XLA program), not bitwise.

        Returns:
          ``float32 logits [B, T, V]`` (or hidden states); with a cache, a tuple
          ``(logits_or_hidden, new_cache)``.
        """
        cfg = self.config
        tokens = jnp.asarray(tokens)
        if layers is not None and cache is None:
            raise ValueError("layers= (per-layer decode weights) needs a cache=; drop it.")
        if tokens.ndim != 2:
            raise ValueError(f"tokens must be int32[B, T], got shape {tokens.shape}.")
        B, T = tokens.shape
        dt = jnp.dtype(cfg.dtype)
        mask = (
            jnp.ones((B, T), jnp.bool_)
            if attention_mask is None
            else jnp.asarray(attention_mask).astype(jnp.bool_)
        )
        if mask.shape != (B, T):
            raise ValueError(f"attention_mask shape {mask.shape} != tokens shape {(B, T)}.")
        if positions is None:
            prior = 0 if cache is None else jnp.sum(cache.key_mask, axis=-1, dtype=jnp.int32)
            prior = jnp.reshape(prior, (-1, 1))
            positions = jnp.maximum(prior + jnp.cumsum(mask, axis=-1, dtype=jnp.int32) - 1, 0)
        positions = jnp.asarray(positions, jnp.int32)
        if positions.shape != (B, T):
            raise ValueError(f"positions shape {positions.shape} != tokens shape {(B, T)}.")

        x = jnp.take(self.embed[...], tokens, axis=0).astype(dt)
        cos, sin = rope_cos_sin(positions, cfg.head_dim, cfg.rope_theta)
        params = self.stacked_layer_params()

        if cache is None:
            causal = jnp.tril(jnp.ones((T, T), jnp.bool_))
            allowed = causal[None] & mask[:, None, :]

            def body(x, p):
                return decoder_layer(cfg, p, x, cos, sin, allowed), None

            if remat not in REMAT_POLICIES:
                raise ValueError(f"remat={remat!r}; use one of {sorted(REMAT_POLICIES)}")
            if remat != "none":
                body = jax.checkpoint(body, policy=REMAT_POLICIES[remat]())

            if not 0 <= frozen_layers <= cfg.num_layers:
                raise ValueError(
                    f"frozen_layers={frozen_layers} must be in [0, num_layers={cfg.num_layers}]"
                )
            if frozen_layers:
                head = jax.tree.map(lambda a: jax.lax.stop_gradient(a[:frozen_layers]), params)
                params = jax.tree.map(lambda a: a[frozen_layers:], params)
                x, _ = jax.lax.scan(body, jax.lax.stop_gradient(x), head)
                x = jax.lax.stop_gradient(x)
            if frozen_layers < cfg.num_layers:
                x, _ = jax.lax.scan(body, x, params)
            new_cache = None
        else:
            if cache.k.shape[:2] != (cfg.num_layers, B):
                raise ValueError(
                    f"cache.k has shape {cache.k.shape}; expected [L={cfg.num_layers}, "
                    f"B={B}, S_max, {cfg.num_kv_heads}, {cfg.head_dim}]."
                )
            idx = cache.index
            S = cache.k.shape[2]
            # dynamic_update_slice clamps out-of-range writes (silently overwriting the last
            # slots), so reject overflow wherever the index is known at trace time.
            if T > S or (not isinstance(idx, jax.core.Tracer) and int(idx) + T > S):
                raise ValueError(
                    f"KV cache overflow: writing {T} tokens at index {idx} into S_max={S} "
                    "slots; allocate a larger cache (KVCache.init(..., max_len))."
                )
            key_mask = jax.lax.dynamic_update_slice(cache.key_mask, mask, (0, idx))
            q_slot = idx + jnp.arange(T)
            allowed = (jnp.arange(S)[None, None, :] <= q_slot[None, :, None]) & key_mask[:, None, :]
            cdt = cache.k.dtype

            def body(carry, xs):
                x, k_all, v_all = carry
                p, layer = xs
                h = rms_norm(x, p["attn_norm"], cfg.rms_norm_eps)
                q, k, v = _qkv(cfg, p, h, cos, sin)
                # Update the carried [L, ...] cache in place (XLA aliases the carry buffer).
                k_all = jax.lax.dynamic_update_slice(
                    k_all, k.astype(cdt)[None], (layer, 0, idx, 0, 0)
                )
                v_all = jax.lax.dynamic_update_slice(
                    v_all, v.astype(cdt)[None], (layer, 0, idx, 0, 0)
                )
                k_l = jax.lax.dynamic_index_in_dim(k_all, layer, 0, keepdims=False)
                v_l = jax.lax.dynamic_index_in_dim(v_all, layer, 0, keepdims=False)
                attn = attention(q, k_l.astype(dt), v_l.astype(dt), allowed)
                return (_attn_out_and_mlp(cfg, p, x, attn), k_all, v_all), None

            if layers is not None:
                if len(layers) != cfg.num_layers:
                    raise ValueError(f"layers has {len(layers)} entries, not {cfg.num_layers}")
                carry = (x, cache.k, cache.v)
                for i, p in enumerate(layers):
                    carry, _ = body(carry, (p, i))
                x, k_all, v_all = carry
            else:
                layer_ids = jnp.arange(cfg.num_layers, dtype=jnp.int32)
                (x, k_all, v_all), _ = jax.lax.scan(
                    body, (x, cache.k, cache.v), (params, layer_ids)
                )
            new_cache = KVCache(k=k_all, v=v_all, key_mask=key_mask, index=idx + T)

        x = rms_norm(x, self.final_norm[...], cfg.rms_norm_eps)
        if return_hidden:
            out = x
        elif cfg.tie_word_embeddings:
            # Contract with the [V, D] table directly: materialising embed.T would copy the
            # whole table (113 MB for SmolLM2) on every decode step.
            out = jnp.einsum(
                "btd,vd->btv", x, self.embed[...].astype(dt), preferred_element_type=jnp.float32
            )
        else:
            out = jnp.einsum(
                "btd,dv->btv", x, self.lm_head[...].astype(dt), preferred_element_type=jnp.float32
            )
        out = out.astype(jnp.float32) if not return_hidden else out
        return out if new_cache is None else (out, new_cache)
