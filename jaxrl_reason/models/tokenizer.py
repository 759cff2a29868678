"""Tokenizers: from GGUF metadata (without torch) or from an HF checkpoint directory."""

from __future__ import annotations

import os
from typing import Any

from jaxrl_reason.models.gguf_loader import field_value

# Files whose presence means a checkpoint directory carries a tokenizer.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")


def _pre_tokenizer_for(pre_type: str | None):
    """Pre-tokenizers llama.cpp knows by name but transformers' GGUF conversion does not."""
    from tokenizers import pre_tokenizers

    if pre_type == "smollm":
        # SmolLM / SmolLM2 tokenizer.json: digits split one by one, then GPT-2 byte level.
        return pre_tokenizers.Sequence(
            [
                pre_tokenizers.Digits(individual_digits=True),
                pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
            ]
        )
    return None


def tokenizer_from_gguf(reader: Any):
    """A ``PreTrainedTokenizerFast`` with special tokens and chat template from GGUF metadata.

    Mirrors ``transformers.integrations.gguf.get_gguf_tokenizer`` but reads the metadata with
    ``gguf.GGUFReader`` (transformers' own GGUF reader imports torch) and hands the vocabulary
    to transformers' torch-free ``convert_gguf_tokenizer``.
    """
    from transformers import PreTrainedTokenizerFast
    from transformers.integrations.gguf.gguf_tokenizer_mapping import (
        GGUF_TOKENIZER_MAPPING,
        convert_gguf_tokenizer,
    )

    arch = field_value(reader, "general.architecture")
    tok_dict, tok_config = {}, {}
    for group, renames in GGUF_TOKENIZER_MAPPING.items():
        target = tok_dict if group == "tokenizer" else tok_config
        for key, name in renames.items():
            value = field_value(reader, f"tokenizer.{key}")
            if value is not None:
                target[name] = value
    if "tokens" not in tok_dict:
        raise KeyError("GGUF metadata has no tokenizer.ggml.tokens; cannot build a tokenizer.")
    backend, _ = convert_gguf_tokenizer(arch, tok_dict)
    pre = _pre_tokenizer_for(tok_dict.get("pre_tokenizer_type"))
    if pre is not None:
        backend.pre_tokenizer = pre
    tokens = tok_dict["tokens"]

    def special(key):
        idx = tok_dict.get(key)
        return tokens[idx] if idx is not None else None

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=special("bos_token_id"),
        eos_token=special("eos_token_id"),
        unk_token=special("unk_token_id"),
        pad_token=special("pad_token_id"),
        chat_template=tok_config.get("chat_template"),
        clean_up_tokenization_spaces=False,
    )
    return tokenizer


def tokenizer_from_dir(path: str):
    """``AutoTokenizer.from_pretrained(path)`` when the directory holds tokenizer files, else
    ``None`` (a bare weights export)."""
    if not any(os.path.exists(os.path.join(path, f)) for f in TOKENIZER_FILES):
        return None
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)
