"""HF checkpoint round trips, GGUF q/k un-permutation, and loader errors."""

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxrl_reason.models import ModelConfig, Transformer, load_pretrained, save_pretrained
from jaxrl_reason.models.gguf_loader import unpermute_qk
from jaxrl_reason.models.hf import hf_tensor_shapes
from tests.models.reference import fwd, randomize

LLAMA = ModelConfig.tiny_debug(tie_word_embeddings=True)
QWEN2 = ModelConfig.tiny_debug(attention_bias=True, tie_word_embeddings=False, rope_theta=1e6)
TOKENS = jnp.asarray([[1, 17, 200, 5, 9, 33, 2], [1, 4, 4, 4, 250, 100, 7]], jnp.int32)


def _tiny_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, **{f"w{i}": i for i in range(3, 256)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )


@pytest.mark.parametrize("cfg", [LLAMA, QWEN2], ids=["llama", "qwen2"])
@pytest.mark.parametrize("shard", [None, 40_000], ids=["single", "sharded"])
def test_hf_round_trip_identical_logits(tmp_path, cfg, shard):
    model = randomize(Transformer(cfg, rngs=nnx.Rngs(0)), seed=1)
    files = save_pretrained(model, None, str(tmp_path), max_shard_bytes=shard)
    assert ("model.safetensors.index.json" in files) == (shard is not None)
    hf = json.loads((tmp_path / "config.json").read_text())
    assert hf["architectures"] == [cfg.architecture]
    loaded, tok = load_pretrained(str(tmp_path))
    assert tok is None and loaded.config == cfg
    np.testing.assert_array_equal(fwd(loaded, TOKENS), fwd(model, TOKENS))


def test_hf_layout_matches_transformers_naming(tmp_path):
    # The file holds exactly the tensors (names, shapes) HF Qwen2 expects, and transformers
    # parses the config.json into the right config class.
    from safetensors.numpy import load_file
    from transformers import AutoConfig

    model = Transformer(QWEN2, rngs=nnx.Rngs(0))
    save_pretrained(model, None, str(tmp_path))
    tensors = load_file(str(tmp_path / "model.safetensors"))
    assert {k: v.shape for k, v in tensors.items()} == hf_tensor_shapes(QWEN2)
    assert tensors["model.layers.0.self_attn.q_proj.weight"].shape == (64, 64)
    assert tensors["model.layers.1.self_attn.k_proj.bias"].shape == (32,)
    hf_cfg = AutoConfig.from_pretrained(str(tmp_path))
    assert type(hf_cfg).__name__ == "Qwen2Config"
    assert (hf_cfg.num_key_value_heads, hf_cfg.rope_parameters["rope_theta"]) == (2, 1e6)


def test_bfloat16_round_trip_and_tokenizer(tmp_path):
    cfg = LLAMA.replace(param_dtype="bfloat16", dtype="bfloat16")
    model = randomize(Transformer(cfg, rngs=nnx.Rngs(0)), seed=2)
    tok = _tiny_tokenizer()
    save_pretrained(model, tok, str(tmp_path))
    loaded, tok2 = load_pretrained(str(tmp_path), dtype="bfloat16", param_dtype="bfloat16")
    assert loaded.embed[...].dtype == jnp.bfloat16
    np.testing.assert_array_equal(fwd(loaded, TOKENS), fwd(model, TOKENS))
    assert tok2("w5 w9 w200").input_ids == tok("w5 w9 w200").input_ids == [5, 9, 200]
    assert tok2.eos_token == "</s>" and tok2.pad_token_id == 0


def test_unpermute_inverts_llama_cpp_permute():
    # convert_hf_to_gguf.py, LlamaModel.permute (copied verbatim).
    def permute(weights, n_head, n_head_kv=None):
        if n_head_kv is not None and n_head != n_head_kv:
            n_head = n_head_kv
        return (
            weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2)
            .reshape(weights.shape)
        )

    w = np.random.default_rng(0).normal(size=(3 * 8, 5))
    assert not np.array_equal(permute(w, 3), w)
    np.testing.assert_array_equal(unpermute_qk(permute(w, 3), 3), w)
    np.testing.assert_array_equal(unpermute_qk(permute(w, 9, 3), 3), w)
    b = np.arange(16.0)  # 2 heads of Dh=8: interleaved halves [0,4,1,5,2,6,3,7]
    np.testing.assert_array_equal(permute(b, 2)[:8], [0, 4, 1, 5, 2, 6, 3, 7])


# ---------------------------------------------------------------------------- errors


def test_unknown_name_lists_known_names():
    with pytest.raises(ValueError, match="smollm2-135m-instruct"):
        load_pretrained("gpt-17-ultra")


def test_missing_files_are_named(tmp_path):
    model = Transformer(LLAMA, rngs=nnx.Rngs(0))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_pretrained(str(empty))
    save_pretrained(model, None, str(tmp_path / "a"))
    os.remove(tmp_path / "a" / "model.safetensors")
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load_pretrained(str(tmp_path / "a"))
    files = save_pretrained(model, None, str(tmp_path / "b"), max_shard_bytes=40_000)
    shard = files[1]
    assert shard.startswith("model-00002-of-")
    os.remove(tmp_path / "b" / shard)
    with pytest.raises(FileNotFoundError, match=shard):
        load_pretrained(str(tmp_path / "b"))
    with pytest.raises(FileNotFoundError, match="nope.gguf"):
        load_pretrained(str(tmp_path / "nope.gguf"))


def test_unsupported_architecture_is_named(tmp_path):
    save_pretrained(Transformer(LLAMA, rngs=nnx.Rngs(0)), None, str(tmp_path))
    hf = json.loads((tmp_path / "config.json").read_text())
    hf.update(architectures=["MistralForCausalLM"], model_type="mistral")
    (tmp_path / "config.json").write_text(json.dumps(hf))
    with pytest.raises(ValueError, match=r"MistralForCausalLM.*LlamaForCausalLM"):
        load_pretrained(str(tmp_path))


def test_shape_mismatch_names_tensor_and_shapes(tmp_path):
    save_pretrained(Transformer(LLAMA, rngs=nnx.Rngs(0)), None, str(tmp_path))
    hf = json.loads((tmp_path / "config.json").read_text())
    hf["intermediate_size"] = 96
    (tmp_path / "config.json").write_text(json.dumps(hf))
    with pytest.raises(ValueError, match=r"'model.layers.0.mlp.gate_proj.weight'.*\(128, 64\).*"):
        load_pretrained(str(tmp_path))


def test_missing_tensor_is_named(tmp_path):
    from safetensors.numpy import load_file, save_file

    save_pretrained(Transformer(QWEN2, rngs=nnx.Rngs(0)), None, str(tmp_path))
    tensors = load_file(str(tmp_path / "model.safetensors"))
    del tensors["lm_head.weight"]
    save_file(tensors, str(tmp_path / "model.safetensors"))
    with pytest.raises(KeyError, match="lm_head.weight"):
        load_pretrained(str(tmp_path))
