"""The real SmolLM2-135M-Instruct GGUF: config, tokenizer, chat template, log-probs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.models.conftest import FIXED_TEXT, TORCH_NEXT_TOKEN_LOGPROBS_HEAD
from tests.models.reference import fwd


def _next_token_logprobs(model, ids):
    logits = fwd(model, jnp.asarray([ids], jnp.int32))[0]
    logp = jax.nn.log_softmax(logits, axis=-1)
    return np.asarray(logp), np.asarray(logp[jnp.arange(len(ids) - 1), jnp.asarray(ids[1:])])


def test_config(smollm2):
    model, _ = smollm2
    cfg = model.config
    assert (cfg.num_layers, cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads) == (30, 576, 9, 3)
    assert (cfg.vocab_size, cfg.head_dim, cfg.intermediate_size) == (49152, 64, 1536)
    assert cfg.tie_word_embeddings and not cfg.attention_bias and model.lm_head is None
    assert cfg.rope_theta == 100000.0 and abs(cfg.rms_norm_eps - 1e-5) < 1e-9
    assert (cfg.bos_token_id, cfg.eos_token_id, cfg.pad_token_id) == (1, 2, 2)


def test_tokenizer_and_chat_template(smollm2):
    _, tok = smollm2
    msgs = [{"role": "user", "content": "What is the capital of France?"}]
    text = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    assert text == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
        "Face<|im_end|>\n<|im_start|>user\nWhat is the capital of France?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    ids = tok(text).input_ids
    assert ids[0] == tok.convert_tokens_to_ids("<|im_start|>") == 1
    assert ids.count(2) == 2  # <|im_end|> stays one special token
    assert (tok.eos_token, tok.pad_token_id) == ("<|im_end|>", 2)
    # SmolLM2's pre-tokenizer splits digits one by one.
    assert tok("12345").input_ids == [33, 34, 35, 36, 37]
    assert tok.decode(tok(FIXED_TEXT).input_ids) == FIXED_TEXT


def test_next_token_logprobs_are_sane(smollm2):
    model, tok = smollm2
    ids = tok(FIXED_TEXT).input_ids
    full, nxt = _next_token_logprobs(model, ids)
    assert np.isfinite(full).all()
    np.testing.assert_allclose(np.log(np.exp(full).sum(-1)), 0.0, atol=1e-4)
    # Pinned against transformers + torch on the same GGUF (tolerance of the Must-show).
    np.testing.assert_allclose(nxt[:5], TORCH_NEXT_TOKEN_LOGPROBS_HEAD, atol=1e-3)
    # The model knows the capital of France: " Paris" is the most likely next token after
    # "The capital of France is" (a prefix of the text, so the same forward pass answers).
    prefix = tok("The capital of France is").input_ids
    assert ids[: len(prefix)] == prefix
    assert tok.decode([int(np.argmax(full[len(prefix) - 1]))]) == " Paris"
    # Predictable continuations are likely, and the text as a whole is far better than chance.
    assert nxt.mean() > -3.0 > -np.log(49152)


@pytest.mark.slow
def test_bfloat16_close_to_float32(smollm2):
    from jaxrl_reason.models import load_pretrained

    model32, tok = smollm2
    model16, _ = load_pretrained("smollm2-135m-instruct", dtype="bfloat16", param_dtype="bfloat16")
    ids = tok(FIXED_TEXT).input_ids
    _, n32 = _next_token_logprobs(model32, ids)
    _, n16 = _next_token_logprobs(model16, ids)
    assert np.abs(n16 - n32).max() < 0.5 and np.abs(n16 - n32).mean() < 0.1
