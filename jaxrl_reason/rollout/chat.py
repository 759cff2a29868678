"""Chat prompts in, response text out: the tokenizer side of a rollout."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

__all__ = ["chat_prompt_ids", "decode_responses", "newline_token_ids", "stop_token_ids"]


def chat_prompt_ids(tokenizer, task, examples) -> list[list[int]]:
    """Token ids of each example's chat prompt (template applied, generation prompt added)."""
    out = []
    for ex in examples:
        ids = tokenizer.apply_chat_template(
            task.build_prompt(ex), add_generation_prompt=True, tokenize=True
        )
        if isinstance(ids, dict) or hasattr(ids, "input_ids"):
            ids = ids["input_ids"]
        out.append(list(ids))
    return out


def decode_responses(tokenizer, tokens: np.ndarray, lengths: np.ndarray) -> list[str]:
    """Decodes each row's first ``lengths[i]`` tokens (special tokens dropped)."""
    return [
        tokenizer.decode(row[: int(n)].tolist(), skip_special_tokens=True)
        for row, n in zip(tokens, lengths, strict=True)
    ]


def stop_token_ids(tokenizer: Any, model: Any = None) -> tuple[int, ...]:
    """End-of-turn ids: the tokenizer's (and the model config's) EOS, and ``<|im_end|>``.

    Chat models end a turn with ``<|im_end|>`` (SmolLM2, Qwen2.5), which is not always the
    tokenizer's ``eos_token``; stopping on it keeps the response to the assistant turn.
    """
    cfg = getattr(model, "config", None) or getattr(model, "cfg", None)
    ids = {getattr(cfg, "eos_token_id", None), getattr(tokenizer, "eos_token_id", None)}
    try:
        im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    except (KeyError, AttributeError):
        im_end = None
    if isinstance(im_end, int) and im_end != getattr(tokenizer, "unk_token_id", None):
        ids.add(im_end)
    return tuple(sorted(int(i) for i in ids if i is not None))


@functools.lru_cache(maxsize=4)
def _newline_ids(tokenizer: Any) -> tuple[int, ...]:
    vocab = tokenizer.get_vocab()
    return tuple(
        sorted(int(i) for t, i in vocab.items() if "\n" in tokenizer.convert_tokens_to_string([t]))
    )


def newline_token_ids(tokenizer: Any) -> tuple[int, ...]:
    """Every vocabulary id whose text contains ``"\\n"``: the step-boundary stop ids of
    step-level search (:mod:`jaxrl_reason.search`) and of segment trees forked at step ends
    (``rollout.tree.fork_at = "steps"``). BPE merges newlines into tokens like ``".\\n"`` or
    ``"\\n\\n"``, so stopping on the lone ``"\\n"`` id would miss most line ends. Cached per
    tokenizer (``tokenizer`` needs ``get_vocab`` and ``convert_tokens_to_string``)."""
    return _newline_ids(tokenizer)
