"""Hugging Face checkpoint layout <-> this package's stacked parameters.

HF Llama / Qwen2 store one tensor per layer in ``torch.nn.Linear`` layout ``[out, in]``
(``model.layers.{i}.self_attn.q_proj.weight [H*Dh, D]`` ...). The NNX model stores every layer
parameter stacked on a leading ``[L]`` axis, with heads split out (``q_proj [L, D, H, Dh]``).
This module converts between the two and reads / writes safetensors checkpoint directories
(``config.json`` + ``model.safetensors`` or shards with ``model.safetensors.index.json``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxrl_reason.models.config import ModelConfig
from jaxrl_reason.models.transformer import Transformer, layer_shapes

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"


def _hf_layer_table(cfg: ModelConfig) -> dict[str, tuple[str, Callable, Callable]]:
    """``ours -> (hf suffix, hf_to_ours, ours_to_hf)`` for one layer's slice."""
    D, H, K, Dh = cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    ident = (lambda w: w, lambda w: w)

    def in_heads(n):  # [n*Dh, D] <-> [D, n, Dh]
        return (lambda w: w.T.reshape(D, n, Dh), lambda w: w.reshape(D, n * Dh).T)

    def bias(n):  # [n*Dh] <-> [n, Dh]
        return (lambda w: w.reshape(n, Dh), lambda w: w.reshape(n * Dh))

    transpose = (lambda w: w.T, lambda w: w.T)
    table = {
        "attn_norm": ("input_layernorm.weight", *ident),
        "q_proj": ("self_attn.q_proj.weight", *in_heads(H)),
        "k_proj": ("self_attn.k_proj.weight", *in_heads(K)),
        "v_proj": ("self_attn.v_proj.weight", *in_heads(K)),
        "q_bias": ("self_attn.q_proj.bias", *bias(H)),
        "k_bias": ("self_attn.k_proj.bias", *bias(K)),
        "v_bias": ("self_attn.v_proj.bias", *bias(K)),
        # [D, H*Dh] <-> [H, Dh, D]
        "o_proj": (
            "self_attn.o_proj.weight",
            lambda w: w.T.reshape(H, Dh, D),
            lambda w: w.reshape(H * Dh, D).T,
        ),
        "mlp_norm": ("post_attention_layernorm.weight", *ident),
        "gate_proj": ("mlp.gate_proj.weight", *transpose),
        "up_proj": ("mlp.up_proj.weight", *transpose),
        "down_proj": ("mlp.down_proj.weight", *transpose),
    }
    return {name: table[name] for name in layer_shapes(cfg)}


def hf_tensor_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor name an HF checkpoint of ``cfg`` holds, with its shape."""
    L, D, V = cfg.num_layers, cfg.hidden_size, cfg.vocab_size
    shapes = {"model.embed_tokens.weight": (V, D), "model.norm.weight": (D,)}
    if not cfg.tie_word_embeddings:
        shapes["lm_head.weight"] = (V, D)
    for name, (suffix, _, to_hf) in _hf_layer_table(cfg).items():
        one = layer_shapes(cfg)[name][1:]
        shape = to_hf(np.zeros(one, np.float32)).shape
        for i in range(L):
            shapes[f"model.layers.{i}.{suffix}"] = shape
    return shapes


def _check_shape(name: str, array: Any, expected: tuple[int, ...]) -> None:
    if tuple(array.shape) != tuple(expected):
        raise ValueError(
            f"Shape mismatch for tensor {name!r}: checkpoint has {tuple(array.shape)}, "
            f"the config expects {tuple(expected)}."
        )


def params_from_hf(cfg: ModelConfig, tensors: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """HF-named tensors -> the flat parameter dict ``{embed, final_norm, [lm_head], layers/..}``.

    Raises ``KeyError`` naming a missing tensor and ``ValueError`` naming a tensor whose shape
    differs from the config's. A tied config ignores an ``lm_head.weight`` present in the file.
    """
    expected = hf_tensor_shapes(cfg)

    def get(name):
        if name not in tensors:
            raise KeyError(f"Checkpoint is missing tensor {name!r} (needed by the config).")
        value = tensors[name]
        _check_shape(name, value, expected[name])
        return np.asarray(value)

    out = {"embed": get("model.embed_tokens.weight"), "final_norm": get("model.norm.weight")}
    if not cfg.tie_word_embeddings:
        out["lm_head"] = get("lm_head.weight").T
    for name, (suffix, to_ours, _) in _hf_layer_table(cfg).items():
        out[f"layers/{name}"] = np.stack(
            [to_ours(get(f"model.layers.{i}.{suffix}")) for i in range(cfg.num_layers)]
        )
    # Stacking transposed views can give non-C-ordered arrays; safetensors writes raw buffers.
    return {k: np.ascontiguousarray(v) for k, v in out.items()}


def params_to_hf(cfg: ModelConfig, params: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Inverse of :func:`params_from_hf` (contiguous NumPy arrays, HF names)."""
    out = {
        "model.embed_tokens.weight": params["embed"],
        "model.norm.weight": params["final_norm"],
    }
    if not cfg.tie_word_embeddings:
        out["lm_head.weight"] = np.asarray(params["lm_head"]).T
    for name, (suffix, _, to_hf) in _hf_layer_table(cfg).items():
        stacked = np.asarray(params[f"layers/{name}"])
        for i in range(cfg.num_layers):
            out[f"model.layers.{i}.{suffix}"] = to_hf(stacked[i])
    return {k: np.ascontiguousarray(np.asarray(v)) for k, v in out.items()}


def model_params(model: Transformer) -> dict[str, jax.Array]:
    """The model's parameters as the flat dict the converters use."""
    out = {"embed": model.embed[...], "final_norm": model.final_norm[...]}
    if not model.config.tie_word_embeddings:
        out["lm_head"] = model.lm_head[...]
    for name, value in model.stacked_layer_params().items():
        out[f"layers/{name}"] = value
    return out


def model_from_params(cfg: ModelConfig, params: Mapping[str, Any]) -> Transformer:
    """Build a :class:`Transformer` holding ``params`` (cast to ``cfg.param_dtype``).

    The module is created abstractly (``nnx.eval_shape``), so no random initialisation of the
    full-size weights is computed only to be overwritten.
    """
    abstract = nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0)))
    graph, state = nnx.split(abstract)
    flat = nnx.to_flat_state(state)
    pdt = jnp.dtype(cfg.param_dtype)
    for path, var in flat:
        key = "/".join(str(p) for p in path)
        if key not in params:
            raise KeyError(f"Missing parameter {key!r} for {cfg.architecture}.")
        value = params[key]
        _check_shape(key, value, var.get_value().shape)
        var.set_value(jnp.asarray(np.asarray(value), dtype=pdt))
    return nnx.merge(graph, nnx.from_flat_state(flat))


def read_safetensors_dir(path: str) -> dict[str, np.ndarray]:
    """All tensors of a checkpoint directory (single file or index + shards) as NumPy."""
    from safetensors.numpy import load_file

    index = os.path.join(path, INDEX_FILE)
    single = os.path.join(path, WEIGHTS_FILE)
    if os.path.exists(index):
        with open(index) as f:
            weight_map = json.load(f)["weight_map"]
        tensors = {}
        for shard in sorted(set(weight_map.values())):
            shard_path = os.path.join(path, shard)
            if not os.path.exists(shard_path):
                raise FileNotFoundError(f"{INDEX_FILE} names shard {shard!r}, missing in {path}.")
            tensors.update(load_file(shard_path))
        return tensors
    if os.path.exists(single):
        return load_file(single)
    raise FileNotFoundError(f"No {WEIGHTS_FILE} or {INDEX_FILE} in checkpoint directory {path}.")


def write_safetensors_dir(
    tensors: Mapping[str, np.ndarray], path: str, max_shard_bytes: int | None = None
) -> list[str]:
    """Write ``tensors`` as ``model.safetensors`` or, when they exceed ``max_shard_bytes``,
    as ``model-0000i-of-0000n.safetensors`` shards plus ``model.safetensors.index.json``.
    Returns the file names written."""
    from safetensors.numpy import save_file

    names = sorted(tensors)
    total = sum(tensors[n].nbytes for n in names)
    if max_shard_bytes is None or total <= max_shard_bytes:
        save_file(dict(tensors), os.path.join(path, WEIGHTS_FILE), metadata={"format": "pt"})
        return [WEIGHTS_FILE]
    shards, current, size = [], [], 0
    for n in names:
        if current and size + tensors[n].nbytes > max_shard_bytes:
            shards.append(current)
            current, size = [], 0
        current.append(n)
        size += tensors[n].nbytes
    shards.append(current)
    weight_map, files = {}, []
    for i, shard in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file({n: tensors[n] for n in shard}, os.path.join(path, fname), {"format": "pt"})
        weight_map.update({n: fname for n in shard})
        files.append(fname)
    with open(os.path.join(path, INDEX_FILE), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    return [*files, INDEX_FILE]


def read_hf_config(path: str) -> dict[str, Any]:
    """``config.json`` of a checkpoint directory (FileNotFoundError naming it when absent)."""
    cfg_path = os.path.join(path, CONFIG_FILE)
    if not os.path.exists(cfg_path):
        raise FileNotFoundError(f"Missing {CONFIG_FILE} in checkpoint directory {path}.")
    with open(cfg_path) as f:
        return json.load(f)
