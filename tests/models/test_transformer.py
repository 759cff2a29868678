"""The NNX decoder: against an independent reference, cache decoding, padding, dtypes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxrl_reason.models import KVCache, ModelConfig, Transformer
from tests.models.reference import fwd, fwd_cache, model_params, randomize, reference_logits

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
    logits = fwd(model, jnp.asarray(tokens, jnp.int32))
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
    full = fwd(model, tokens)
    step = fwd_cache
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
    params = model_params(model)
    rng = np.random.default_rng(3)
    prompts = [rng.integers(3, cfg.vocab_size, n).tolist() for n in (6, 3, 1)]
    P = 6
    tokens = np.zeros((3, P), np.int32)
    mask = np.zeros((3, P), bool)
    for b, p in enumerate(prompts):
        tokens[b, P - len(p) :] = p
        mask[b, P - len(p) :] = True
    logits = fwd(model, jnp.asarray(tokens), jnp.asarray(mask))
    assert np.isfinite(np.asarray(logits)).all()  # padding rows attend to nothing: no NaN
    # With a cache: prefill the padded batch, then decode two more tokens per row.
    cache = KVCache.init(cfg, 3, 10)
    pre, cache = fwd_cache(model, jnp.asarray(tokens), cache, jnp.asarray(mask))
    nxt = rng.integers(3, cfg.vocab_size, (3, 2))
    steps = []
    for i in range(2):
        out, cache = fwd_cache(model, jnp.asarray(nxt[:, i : i + 1]), cache)
        steps.append(out[:, 0])
    for b, p in enumerate(prompts):
        # Each prompt alone (then continued), through the unpadded NumPy reference.
        alone = reference_logits(cfg, params, p + nxt[b].tolist())
        n = len(p)
        np.testing.assert_allclose(logits[b, P - n :], alone[:n], atol=2e-5, rtol=1e-4)
        np.testing.assert_allclose(pre[b, P - n :], alone[:n], atol=2e-5, rtol=1e-4)
        np.testing.assert_allclose(steps[0][b], alone[n], atol=1e-4, rtol=1e-4)
        np.testing.assert_allclose(steps[1][b], alone[n + 1], atol=1e-4, rtol=1e-4)


def test_default_positions_follow_contract():
    cfg = CONFIGS["llama_tied"]
    model = _model(cfg)
    tokens = jnp.asarray([[0, 0, 5, 6, 7]], jnp.int32)
    mask = jnp.asarray([[False, False, True, True, True]])
    explicit = jnp.asarray([[0, 0, 0, 1, 2]], jnp.int32)
    np.testing.assert_allclose(
        fwd(model, tokens, mask), fwd(model, tokens, mask, explicit), atol=1e-6
    )
    # Unmasked: arange(T). RoPE is relative: a uniform shift leaves the logits unchanged, a
    # non-uniform one changes them.
    plain = jnp.asarray([[4, 5, 6, 7, 8]], jnp.int32)
    base = fwd(model, plain)
    pos = lambda *p: jnp.asarray([p], jnp.int32)
    np.testing.assert_allclose(base, fwd(model, plain, None, pos(0, 1, 2, 3, 4)), atol=1e-6)
    np.testing.assert_allclose(base, fwd(model, plain, None, pos(7, 8, 9, 10, 11)), atol=1e-4)
    assert np.abs(np.asarray(base - fwd(model, plain, None, pos(0, 2, 4, 6, 8)))).max() > 1e-2


def test_bfloat16_compute_is_close_and_logits_float32():
    cfg32 = CONFIGS["llama_tied"]
    m32 = _model(cfg32)
    cfg16 = cfg32.replace(dtype="bfloat16", param_dtype="bfloat16")
    m16 = Transformer(cfg16, rngs=nnx.Rngs(0))
    nnx.update(m16, jax.tree.map(lambda a: a.astype(jnp.bfloat16), nnx.state(m32, nnx.Param)))
    assert m16.embed[...].dtype == jnp.bfloat16
    tokens = jnp.arange(16, dtype=jnp.int32).reshape(2, 8)
    l32, l16 = fwd(m32, tokens), fwd(m16, tokens)
    assert l16.dtype == jnp.float32
    assert np.abs(np.asarray(l16 - l32)).max() < 0.05 * np.abs(np.asarray(l32)).max()
    cache = KVCache.init(cfg16, 2, 8)
    assert cache.k.dtype == jnp.bfloat16
    out, _ = fwd_cache(m16, tokens, cache)
    np.testing.assert_allclose(out, l16, atol=0.02)


def test_trace_size_does_not_grow_with_depth():
    # The layers are scanned: the traced program of a 2-layer and a 12-layer model has the
    # same number of equations, so compile time is flat in depth.
    def n_eqns(num_layers):
        cfg = ModelConfig.tiny_debug(num_layers=num_layers)
        graph, state = nnx.split(nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0))))
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
    cache = KVCache.init(model.config, 2, 4)
    _, cache = model(jnp.zeros((2, 3), jnp.int32), cache=cache)
    with pytest.raises(ValueError, match="KV cache overflow"):
        model(jnp.zeros((2, 2), jnp.int32), cache=cache)
