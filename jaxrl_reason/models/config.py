"""Model configuration for the Llama / Qwen2 / SmolLM decoder family.

One frozen dataclass describes every model this package builds. It converts to and from a
Hugging Face ``config.json`` dict (``LlamaForCausalLM`` and ``Qwen2ForCausalLM``) so that
checkpoints round-trip through :func:`jaxrl_reason.models.save_pretrained` /
:func:`jaxrl_reason.models.load_pretrained`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

# Architectures the loader accepts, and the HF ``model_type`` each one writes.
SUPPORTED_ARCHITECTURES = {"LlamaForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2"}
_DTYPES = ("float32", "bfloat16")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters of a pre-norm decoder (GQA + RoPE + RMSNorm + SwiGLU).

    Attributes:
      vocab_size: V, rows of the embedding table and columns of the LM head.
      hidden_size: D, width of the residual stream.
      intermediate_size: F, width of the SwiGLU MLP.
      num_layers: L, number of decoder layers (stacked and scanned).
      num_heads: H, query heads.
      num_kv_heads: KVH, key/value heads (grouped-query attention; H % KVH == 0).
      head_dim: Dh, per-head width (HF default ``hidden_size // num_heads``).
      rope_theta: RoPE base frequency.
      rms_norm_eps: epsilon inside RMSNorm.
      tie_word_embeddings: LM head is the transposed embedding table.
      attention_bias: q/k/v projections carry a bias (Qwen2). The output projection never
        does; a config with ``attention_bias=True`` exports as ``Qwen2ForCausalLM``.
      max_position_embeddings: the longest context the model was trained for (informational;
        RoPE itself has no table).
      param_dtype: storage dtype of the parameters, "float32" or "bfloat16".
      dtype: compute dtype of matmuls and activations; logits are always float32.
      bos_token_id, eos_token_id, pad_token_id: special token ids (may be None).
    """

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int | None = None
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5
    tie_word_embeddings: bool = True
    attention_bias: bool = False
    max_position_embeddings: int = 2048
    param_dtype: str = "float32"
    dtype: str = "float32"
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    pad_token_id: int | None = None

    def __post_init__(self):
        if self.head_dim is None:
            if self.num_heads > 0 and self.hidden_size % self.num_heads != 0:
                raise ValueError(
                    f"ModelConfig: hidden_size={self.hidden_size} is not divisible by "
                    f"num_heads={self.num_heads}; pass head_dim explicitly."
                )
            object.__setattr__(self, "head_dim", self.hidden_size // max(self.num_heads, 1))
        for name in (
            "vocab_size",
            "hidden_size",
            "intermediate_size",
            "num_layers",
            "num_heads",
            "num_kv_heads",
            "head_dim",
            "max_position_embeddings",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"ModelConfig.{name} must be a positive int, got {value!r}.")
        if self.num_heads % self.num_kv_heads != 0:
            raise ValueError(
                f"ModelConfig: num_heads={self.num_heads} must be a multiple of "
                f"num_kv_heads={self.num_kv_heads} (grouped-query attention)."
            )
        if self.head_dim % 2 != 0:
            raise ValueError(f"ModelConfig.head_dim={self.head_dim} must be even for RoPE.")
        if not self.rope_theta > 0:
            raise ValueError(f"ModelConfig.rope_theta must be > 0, got {self.rope_theta}.")
        if not self.rms_norm_eps > 0:
            raise ValueError(f"ModelConfig.rms_norm_eps must be > 0, got {self.rms_norm_eps}.")
        for name in ("param_dtype", "dtype"):
            if getattr(self, name) not in _DTYPES:
                raise ValueError(
                    f"ModelConfig.{name}={getattr(self, name)!r} is not supported; "
                    f"use one of {_DTYPES}."
                )
        for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
            value = getattr(self, name)
            if value is not None and not (0 <= value < self.vocab_size):
                raise ValueError(
                    f"ModelConfig.{name}={value} is outside the vocabulary [0, {self.vocab_size})."
                )

    @property
    def architecture(self) -> str:
        """The HF architecture this config exports as (qkv bias <=> Qwen2)."""
        return "Qwen2ForCausalLM" if self.attention_bias else "LlamaForCausalLM"

    def replace(self, **changes: Any) -> ModelConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def tiny_debug(cls, **overrides: Any) -> ModelConfig:
        """A 2-layer random model (V=256, D=64, H=4, KVH=2) for fast tests."""
        base = dict(
            vocab_size=256,
            hidden_size=64,
            intermediate_size=128,
            num_layers=2,
            num_heads=4,
            num_kv_heads=2,
            head_dim=16,
            rope_theta=10000.0,
            rms_norm_eps=1e-5,
            tie_word_embeddings=True,
            attention_bias=False,
            max_position_embeddings=512,
            bos_token_id=1,
            eos_token_id=2,
            pad_token_id=0,
        )
        base.update(overrides)
        return cls(**base)

    @classmethod
    def from_hf_config(cls, hf: dict[str, Any], **overrides: Any) -> ModelConfig:
        """Build from a Hugging Face ``config.json`` dict (Llama or Qwen2).

        Raises ``ValueError`` naming the architecture for anything else, and for features this
        decoder does not implement (RoPE scaling, sliding windows, MLP / output biases).
        """
        archs = hf.get("architectures") or []
        model_type = hf.get("model_type")
        arch = next((a for a in archs if a in SUPPORTED_ARCHITECTURES), None)
        if arch is None and model_type in SUPPORTED_ARCHITECTURES.values():
            arch = next(a for a, t in SUPPORTED_ARCHITECTURES.items() if t == model_type)
        if arch is None:
            raise ValueError(
                f"Unsupported architecture {archs or model_type!r}; supported: "
                f"{sorted(SUPPORTED_ARCHITECTURES)}."
            )
        is_qwen2 = arch == "Qwen2ForCausalLM"
        rope_scaling = hf.get("rope_scaling")
        rope_params = hf.get("rope_parameters") or {}
        rope_type = (rope_scaling or {}).get("rope_type") or rope_params.get("rope_type")
        if rope_type not in (None, "default"):
            raise ValueError(
                f"{arch}: rope scaling {rope_type!r} is not implemented (only default RoPE)."
            )
        if hf.get("use_sliding_window"):
            raise ValueError(f"{arch}: use_sliding_window=True is not implemented.")
        if hf.get("mlp_bias"):
            raise ValueError(f"{arch}: mlp_bias=True is not implemented.")
        if not is_qwen2 and hf.get("attention_bias"):
            raise ValueError(
                "LlamaForCausalLM: attention_bias=True (bias on q/k/v/o) is not implemented."
            )
        if hf.get("hidden_act", "silu") != "silu":
            raise ValueError(f"{arch}: hidden_act={hf['hidden_act']!r} is not supported (silu).")
        rope_theta = hf.get("rope_theta", rope_params.get("rope_theta", 10000.0))
        eos = hf.get("eos_token_id")
        if isinstance(eos, list | tuple):
            # One stop id is kept; callers wanting several pass them to the sampler.
            eos = eos[0] if eos else None
        num_heads = hf["num_attention_heads"]
        kwargs = dict(
            vocab_size=hf["vocab_size"],
            hidden_size=hf["hidden_size"],
            intermediate_size=hf["intermediate_size"],
            num_layers=hf["num_hidden_layers"],
            num_heads=num_heads,
            num_kv_heads=hf.get("num_key_value_heads") or num_heads,
            head_dim=hf.get("head_dim"),
            rope_theta=float(rope_theta),
            rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6 if is_qwen2 else 1e-5)),
            tie_word_embeddings=bool(hf.get("tie_word_embeddings", not is_qwen2)),
            attention_bias=is_qwen2,
            max_position_embeddings=hf.get("max_position_embeddings", 2048),
            bos_token_id=hf.get("bos_token_id"),
            eos_token_id=eos,
            pad_token_id=hf.get("pad_token_id"),
        )
        kwargs.update(overrides)
        return cls(**kwargs)

    def to_hf_config(self) -> dict[str, Any]:
        """The Hugging Face ``config.json`` dict (Qwen2 iff ``attention_bias``, else Llama)."""
        arch = self.architecture
        out = {
            "architectures": [arch],
            "model_type": SUPPORTED_ARCHITECTURES[arch],
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "rope_theta": self.rope_theta,
            # transformers >= 5 reads RoPE settings from here; older versions from rope_theta.
            "rope_parameters": {"rope_type": "default", "rope_theta": self.rope_theta},
            "rms_norm_eps": self.rms_norm_eps,
            "tie_word_embeddings": self.tie_word_embeddings,
            "max_position_embeddings": self.max_position_embeddings,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "pad_token_id": self.pad_token_id,
            "torch_dtype": self.param_dtype,
        }
        if arch == "LlamaForCausalLM":
            out.update(attention_bias=False, mlp_bias=False)
        else:
            out.update(use_sliding_window=False)
        return out
