"""ModelConfig validation and the Hugging Face config.json mapping."""

import pytest

from jaxrl_reason.models import ModelConfig


def test_tiny_debug_and_head_dim_default():
    cfg = ModelConfig.tiny_debug()
    assert (cfg.num_layers, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim) == (2, 4, 2, 16)
    assert ModelConfig.tiny_debug(head_dim=None, hidden_size=96).head_dim == 24


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(num_kv_heads=3), "multiple of num_kv_heads"),
        (dict(hidden_size=0), "hidden_size must be a positive int"),
        (dict(dtype="float16"), "dtype='float16' is not supported"),
        (dict(head_dim=15), "head_dim=15 must be even"),
        (dict(eos_token_id=999), "eos_token_id=999 is outside the vocabulary"),
        (dict(head_dim=None, hidden_size=66), "not divisible by num_heads"),
    ],
)
def test_validation_names_the_field(change, match):
    with pytest.raises(ValueError, match=match):
        ModelConfig.tiny_debug(**change)


@pytest.mark.parametrize("bias, tied", [(False, True), (True, False), (True, True)])
def test_hf_config_round_trip(bias, tied):
    cfg = ModelConfig.tiny_debug(attention_bias=bias, tie_word_embeddings=tied, rope_theta=5e5)
    hf = cfg.to_hf_config()
    assert hf["architectures"] == ["Qwen2ForCausalLM" if bias else "LlamaForCausalLM"]
    assert ModelConfig.from_hf_config(hf) == cfg


def test_from_hf_qwen2_defaults():
    hf = {
        "architectures": ["Qwen2ForCausalLM"],
        "vocab_size": 100,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "eos_token_id": [7, 8],
    }
    cfg = ModelConfig.from_hf_config(hf)
    assert cfg.attention_bias and not cfg.tie_word_embeddings
    assert (cfg.head_dim, cfg.eos_token_id, cfg.rms_norm_eps) == (8, 7, 1e-6)


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(architectures=["MistralForCausalLM"], model_type="mistral"), "MistralForCausalLM"),
        (dict(rope_scaling={"rope_type": "llama3", "factor": 8.0}), "rope scaling 'llama3'"),
        (dict(attention_bias=True), "attention_bias=True"),
        (dict(hidden_act="gelu"), "hidden_act='gelu'"),
    ],
)
def test_from_hf_rejects_unsupported(change, match):
    hf = ModelConfig.tiny_debug().to_hf_config()
    hf.update(change)
    with pytest.raises(ValueError, match=match):
        ModelConfig.from_hf_config(hf)
