"""The NNX decoder: against an independent reference, cache decoding, padding, dtypes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxrl_reason.models import KVCache, ModelConfig, Transformer
from tests.models.reference import model_params, randomize, reference_logits

CONFIGS = {
    "llama_tied": ModelConfig.tiny_debug(),
    "qwen2_untied": ModelConfig.tiny_debug(
        attention_bias=True, tie_word_embeddings=False, rope_theta=1e6, num_layers=3
    ),
    "mha": ModelConfig.tiny_debug(num_kv_heads=4, head_dim=None),
}


def _model(cfg, seed=0):
    return randomize(Transformer(cfg, rngs=nnx.Rngs(seed)), seed=seed)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_scanned_model_matches_unrolled_numpy_reference(name):
    cfg = CONFIGS[name]
    model = _model(cfg)
    tokens = np.random.default_rng(1).integers(0, cfg.vocab_size, size=(2, 9))
    logits = model(jnp.asarray(tokens, jnp.int32))
    assert logits.dtype == jnp.float32 and logits.shape == (2, 9, cfg.vocab_size)
    params = model_params(model)
    for b in range(2):
        ref = reference_logits(cfg, params, tokens[b])
        np.testing.assert_allclose(np.asarray(logits[b]), ref, atol=2e-5, rtol=1e-4)


def test_hidden_and_lm_head_give_logits():
    cfg = CONFIGS["qwen2_untied"]
    model = _model(cfg)
    tokens = jnp.arange(10, dtype=jnp.int32).reshape(2, 5)
    hidden = model(tokens, return_hidden=True)
    assert hidden.shape == (2, 5, cfg.hidden_size)
    w = model.lm_head_weight()
    assert w.shape == (cfg.hidden_size, cfg.vocab_size)
    np.testing.assert_allclose(hidden @ w, model(tokens), atol=1e-5)
    tied = _model(CONFIGS["llama_tied"])
    np.testing.assert_array_equal(tied.lm_head_weight(), tied.embed[...].T)


@pytest.mark.parametrize("name", ["llama_tied", "qwen2_untied"])
def test_cache_decoding_equals_full_forward(name):
    cfg = CONFIGS[name]
    model = _model(cfg)
    B, P, N = 2, 5, 4
    tokens = jnp.asarray(np.random.default_rng(2).integers(0, cfg.vocab_size, (B, P + N)))
    full = model(tokens)
    step = nnx.jit(lambda m, t, c: m(t, cache=c))
    cache = KVCache.init(cfg, B, 16, "float32")
    logits, cache = step(model, tokens[:, :P], cache)
    got = [logits]
    for i in range(P, P + N):
        logits, cache = step(model, tokens[:, i : i + 1], cache)
        got.append(logits)
    assert int(cache.index) == P + N
    np.testing.assert_allclose(np.concatenate(got, axis=1), full, atol=1e-4)


def test_left_padded_rows_equal_each_prompt_alone():
    cfg = CONFIGS["qwen2_untied"]
    model = _model(cfg)
    rng = np.random.default_rng(3)
    prompts = [rng.integers(3, cfg.vocab_size, n).tolist() for n in (6, 3, 1)]
    P = 6
    tokens = np.zeros((3, P), np.int32)
    mask = np.zeros((3, P), bool)
    for b, p in enumerate(prompts):
        tokens[b, P - len(p) :] = p
        mask[b, P - len(p) :] = True
    logits = model(jnp.asarray(tokens), attention_mask=jnp.asarray(mask))
    assert np.isfinite(np.asarray(logits)).all()  # padding rows attend to nothing: no NaN
    # With a cache: prefill the padded batch, then decode two more tokens per row.
    cache = KVCache.init(cfg, 3, 10)
    pre, cache = model(jnp.asarray(tokens), attention_mask=jnp.asarray(mask), cache=cache)
    nxt = rng.integers(3, cfg.vocab_size, (3, 2))
    steps = []
    for i in range(2):
        out, cache = model(jnp.asarray(nxt[:, i : i + 1]), cache=cache)
        steps.append(out[:, 0])
    for b, p in enumerate(prompts):
        alone = model(jnp.asarray([p], jnp.int32))[0]
        np.testing.assert_allclose(logits[b, P - len(p) :], alone, atol=1e-5)
        np.testing.assert_allclose(pre[b, P - len(p) :], alone, atol=1e-5)
        cont = model(jnp.asarray([p + nxt[b].tolist()], jnp.int32))[0]
        np.testing.assert_allclose(steps[0][b], cont[len(p)], atol=1e-4)
        np.testing.assert_allclose(steps[1][b], cont[len(p) + 1], atol=1e-4)


def test_default_positions_follow_contract():
    cfg = CONFIGS["llama_tied"]
    model = _model(cfg)
    tokens = jnp.asarray([[0, 0, 5, 6, 7]], jnp.int32)
    mask = jnp.asarray([[False, False, True, True, True]])
    explicit = jnp.asarray([[0, 0, 0, 1, 2]], jnp.int32)
    np.testing.assert_array_equal(
        model(tokens, attention_mask=mask),
        model(tokens, attention_mask=mask, positions=explicit),
    )
    # Unmasked: arange(T); shifting every position changes the logits (RoPE is applied).
    plain = jnp.asarray([[4, 5, 6]], jnp.int32)
    np.testing.assert_array_equal(
        model(plain), model(plain, positions=jnp.arange(3, dtype=jnp.int32)[None])
    )
    assert not np.allclose(model(plain), model(plain, positions=jnp.asarray([[3, 4, 5]])))


def test_bfloat16_compute_is_close_and_logits_float32():
    cfg32 = CONFIGS["llama_tied"]
    m32 = _model(cfg32)
    cfg16 = cfg32.replace(dtype="bfloat16", param_dtype="bfloat16")
    m16 = Transformer(cfg16, rngs=nnx.Rngs(0))
    nnx.update(m16, jax.tree.map(lambda a: a.astype(jnp.bfloat16), nnx.state(m32, nnx.Param)))
    assert m16.embed[...].dtype == jnp.bfloat16
    tokens = jnp.arange(16, dtype=jnp.int32).reshape(2, 8)
    l32, l16 = m32(tokens), m16(tokens)
    assert l16.dtype == jnp.float32
    assert np.abs(np.asarray(l16 - l32)).max() < 0.05 * np.abs(np.asarray(l32)).max()
    cache = KVCache.init(cfg16, 2, 8)
    assert cache.k.dtype == jnp.bfloat16
    out, _ = m16(tokens, cache=cache)
    np.testing.assert_allclose(out, l16, atol=0.02)


def test_trace_size_does_not_grow_with_depth():
    # The layers are scanned: the traced program of a 2-layer and a 12-layer model has the
    # same number of equations, so compile time is flat in depth.
    def n_eqns(num_layers):
        model = Transformer(ModelConfig.tiny_debug(num_layers=num_layers), rngs=nnx.Rngs(0))
        graph, state = nnx.split(model)
        fn = lambda s, t: nnx.merge(graph, s)(t)
        return len(jax.make_jaxpr(fn)(state, jnp.zeros((1, 4), jnp.int32)).eqns)

    assert n_eqns(2) == n_eqns(12)


def test_parameters_carry_logical_axis_names():
    model = Transformer(CONFIGS["qwen2_untied"], rngs=nnx.Rngs(0))
    allowed = {"layers", "vocab", "embed", "heads", "kv_heads", "head_dim", "mlp"}
    for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        names = var.get_metadata()["out_sharding"]
        assert len(names) == var.get_value().ndim, path
        assert set(names) <= allowed, path
        if path[0] == "layers":
            assert names[0] == "layers" and var.get_value().shape[0] == 3


def test_shape_errors_are_clear():
    model = Transformer(ModelConfig.tiny_debug(), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="attention_mask shape"):
        model(jnp.zeros((2, 3), jnp.int32), attention_mask=jnp.ones((2, 4), bool))
    with pytest.raises(ValueError, match=r"tokens must be int32\[B, T\]"):
        model(jnp.zeros((3,), jnp.int32))
    with pytest.raises(ValueError, match="cache.k has shape"):
        model(jnp.zeros((2, 3), jnp.int32), cache=KVCache.init(model.config, 1, 8))
