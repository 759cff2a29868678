"""Read a llama.cpp GGUF file (architecture ``llama``) into HF-named float32 tensors.

Dequantisation uses ``gguf.quants.dequantize`` (the reference NumPy implementation from
llama.cpp's ``gguf-py``). llama.cpp's ``convert_hf_to_gguf.py`` permutes the rows of the q and k
projections (``LlamaModel.permute``) so that its RoPE can rotate interleaved pairs; the HF
rotate-half convention this package uses needs the original order, so the permutation is
undone here (:func:`unpermute_qk`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from jaxrl_reason.models.config import ModelConfig

SUPPORTED_GGUF_ARCHITECTURES = ("llama",)

# GGUF tensor name (per layer after "blk.{i}.") -> HF suffix after "model.layers.{i}.".
_GGUF_LAYER_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
_GGUF_GLOBAL_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}


def unpermute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """Invert llama.cpp's ``permute(w, n_head)`` on a ``[n_head * Dh, ...]`` q/k weight.

    llama.cpp writes ``w.reshape(n_head, 2, Dh/2, ...).swapaxes(1, 2)``: within each head the
    two halves are interleaved. Reading it as ``(n_head, Dh/2, 2, ...)`` and swapping back
    restores the HF order.
    """
    shape = w.shape
    return w.reshape(n_head, shape[0] // n_head // 2, 2, *shape[1:]).swapaxes(1, 2).reshape(shape)


def field_value(reader: Any, key: str, default: Any = None) -> Any:
    """A metadata value as a Python scalar / str / list (``default`` when absent)."""
    field = reader.fields.get(key)
    if field is None:
        return default
    return field.contents()


def config_from_gguf(reader: Any, **overrides: Any) -> ModelConfig:
    """A :class:`ModelConfig` from GGUF ``llama.*`` / ``tokenizer.ggml.*`` metadata."""
    arch = field_value(reader, "general.architecture")
    if arch not in SUPPORTED_GGUF_ARCHITECTURES:
        raise ValueError(
            f"Unsupported GGUF architecture {arch!r}; supported: {SUPPORTED_GGUF_ARCHITECTURES}."
        )

    def need(key):
        value = field_value(reader, f"{arch}.{key}")
        if value is None:
            raise KeyError(f"GGUF metadata is missing {arch}.{key!s}.")
        return value

    names = {t.name for t in reader.tensors}
    num_heads = int(need("attention.head_count"))
    hidden = int(need("embedding_length"))
    vocab = field_value(reader, f"{arch}.vocab_size")
    if vocab is None:
        vocab = len(reader.fields["tokenizer.ggml.tokens"].data)
    kwargs = dict(
        vocab_size=int(vocab),
        hidden_size=hidden,
        intermediate_size=int(need("feed_forward_length")),
        num_layers=int(need("block_count")),
        num_heads=num_heads,
        num_kv_heads=int(field_value(reader, f"{arch}.attention.head_count_kv", num_heads)),
        head_dim=int(field_value(reader, f"{arch}.rope.dimension_count", hidden // num_heads)),
        rope_theta=float(field_value(reader, f"{arch}.rope.freq_base", 10000.0)),
        rms_norm_eps=float(need("attention.layer_norm_rms_epsilon")),
        tie_word_embeddings="output.weight" not in names,
        attention_bias=False,
        max_position_embeddings=int(field_value(reader, f"{arch}.context_length", 2048)),
        bos_token_id=field_value(reader, "tokenizer.ggml.bos_token_id"),
        eos_token_id=field_value(reader, "tokenizer.ggml.eos_token_id"),
        pad_token_id=field_value(reader, "tokenizer.ggml.padding_token_id"),
    )
    if field_value(reader, f"{arch}.rope.scaling.type") not in (None, "none"):
        raise ValueError("GGUF rope scaling is not implemented (only default RoPE).")
    kwargs.update(overrides)
    return ModelConfig(**kwargs)


def read_gguf_tensors(reader: Any, cfg: ModelConfig) -> dict[str, np.ndarray]:
    """All weights as HF-named float32 arrays in HF ``[out, in]`` layout, q/k un-permuted."""
    from gguf.quants import dequantize

    out = {}
    for tensor in reader.tensors:
        name = tensor.name
        if name in _GGUF_GLOBAL_NAMES:
            hf_name = _GGUF_GLOBAL_NAMES[name]
        elif name.startswith("blk."):
            _, layer, rest = name.split(".", 2)
            if rest not in _GGUF_LAYER_NAMES:
                raise ValueError(f"GGUF tensor {name!r} has no counterpart in this model.")
            hf_name = f"model.layers.{layer}.{_GGUF_LAYER_NAMES[rest]}"
        elif name == "rope_freqs.weight":
            raise ValueError("GGUF tensor 'rope_freqs.weight' (RoPE scaling) is not supported.")
        else:
            raise ValueError(f"GGUF tensor {name!r} has no counterpart in this model.")
        # Numpy shape is the reverse of ggml's: [rows=out, cols=in], as HF stores it.
        w = np.asarray(dequantize(tensor.data, tensor.tensor_type), dtype=np.float32)
        if hf_name.endswith("q_proj.weight"):
            w = unpermute_qk(w, cfg.num_heads)
        elif hf_name.endswith("k_proj.weight"):
            w = unpermute_qk(w, cfg.num_kv_heads)
        out[hf_name] = w
    return out
