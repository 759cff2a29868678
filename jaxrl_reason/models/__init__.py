"""jaxrl_reason.models: the Flax NNX decoder, its KV cache and the checkpoint loaders.

See docs/contracts.md for the interface other layers rely on.
"""

from jaxrl_reason.models.build import build_model, smollm2_tokenizer
from jaxrl_reason.models.cache import KVCache
from jaxrl_reason.models.config import SUPPORTED_ARCHITECTURES, ModelConfig
from jaxrl_reason.models.loaders import KNOWN_MODELS, load_pretrained, save_pretrained
from jaxrl_reason.models.transformer import Transformer

__all__ = [
    "KNOWN_MODELS",
    "KVCache",
    "ModelConfig",
    "SUPPORTED_ARCHITECTURES",
    "Transformer",
    "build_model",
    "load_pretrained",
    "save_pretrained",
    "smollm2_tokenizer",
]
