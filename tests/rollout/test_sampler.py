"""The jitted sampler against the model: KV-cache decoding, padding, groups, stops, prefixes."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxrl_reason.rollout import SamplingConfig, left_pad, sample, trace_count
from tests.rollout.tiny import scaled_tiny_model

PROMPTS = [[1, 5, 6, 7], [1, 9], [3, 4, 5, 6, 7, 8, 9], [1, 200, 17]]


@pytest.fixture(scope="module")
def model():
    """tiny_debug with an untied head and larger weights, so that next-token distributions
    are neither uniform nor a function of the current token alone (entropy ~3 nats, top-2
    logit gaps ~0.1-1): argmax ties cannot hide a wrong cache or wrong positions."""

    return scaled_tiny_model(layer_scale=10.0, head_scale=15.0)


def _greedy_reference(model, prompt, steps, width=32):
    """Greedy decode recomputing the full forward pass (no cache, no padding) every step.

    The sequence lives in a fixed [1, width] buffer so one compile serves every step and
    prompt: with causal attention the logits at column ``len(seq) - 1`` do not depend on the
    unused columns after it.
    """
    graphdef, state = nnx.split(model)
    forward = _forward(graphdef)
    seq = np.zeros((1, width), np.int32)
    seq[0, : len(prompt)] = prompt
    toks, lps = [], []
    for i in range(steps):
        logits = forward(state, jnp.asarray(seq))[len(prompt) + i - 1]
        tok = int(jnp.argmax(logits))
        toks.append(tok)
        lps.append(float(jax.nn.log_softmax(logits)[tok]))
        seq[0, len(prompt) + i] = tok
    return np.array(toks), np.array(lps)


@functools.cache
def _forward(graphdef):
    return jax.jit(lambda s, t: nnx.merge(graphdef, s)(t)[0])


def _kw(cfg, **changes):
    return {**{f: getattr(cfg, f) for f in cfg.__dataclass_fields__}, **changes}


# Tests share these configs (and shapes) so that the whole file compiles few programs.
GREEDY = SamplingConfig(max_new_tokens=10, greedy=True, stop_token_ids=())
SAMPLED = SamplingConfig(max_new_tokens=10, temperature=0.9, top_k=50, stop_token_ids=())


def test_greedy_with_cache_equals_full_recompute_on_a_left_padded_batch(model):
    tokens, mask = left_pad(PROMPTS)
    out = sample(model, tokens, mask, jax.random.key(0), GREEDY)
    assert out.tokens.shape == (4, 10) and out.logprobs.dtype == jnp.float32
    for i, prompt in enumerate(PROMPTS):
        ref_tok, ref_lp = _greedy_reference(model, prompt, 10)
        np.testing.assert_array_equal(out.tokens[i], ref_tok, err_msg=f"row {i}")
        np.testing.assert_allclose(out.logprobs[i], ref_lp, atol=1e-4, err_msg=f"row {i}")
    assert np.all(out.response_mask) and np.all(out.lengths == 10)
    np.testing.assert_array_equal(out.finish_reason, [1, 1, 1, 1])  # length
    np.testing.assert_array_equal(out.prompt_tokens, tokens)
    np.testing.assert_array_equal(out.group_ids, [0, 1, 2, 3])


def test_left_padded_batch_equals_each_prompt_alone_when_sampling(model):
    keys = jax.random.split(jax.random.key(7), len(PROMPTS))
    tokens, mask = left_pad(PROMPTS)
    batch = sample(model, tokens, mask, keys, SAMPLED)
    for i, prompt in enumerate(PROMPTS):
        t1, m1 = left_pad([prompt])
        alone = sample(model, t1, m1, keys[i : i + 1], SAMPLED)
        np.testing.assert_array_equal(batch.tokens[i], alone.tokens[0], err_msg=f"row {i}")
        np.testing.assert_allclose(batch.logprobs[i], alone.logprobs[0], atol=1e-5)
    # Different rows do draw different tokens (the keys are really per row), and sampling
    # differs from greedy.
    assert len({tuple(np.asarray(r)) for r in batch.tokens}) == len(PROMPTS)
    greedy = sample(model, tokens, mask, keys, GREEDY)
    assert not np.array_equal(batch.tokens, greedy.tokens)


def test_top_k_one_and_low_temperature_equal_greedy(model):
    tokens, mask = left_pad(PROMPTS)
    key = jax.random.key(1)
    greedy = sample(model, tokens, mask, key, GREEDY)
    top1 = sample(
        model, tokens, mask, key, SamplingConfig(**_kw(SAMPLED, top_k=1, temperature=1.0))
    )
    cold = sample(model, tokens, mask, key, SamplingConfig(**_kw(SAMPLED, temperature=1e-6)))
    np.testing.assert_array_equal(top1.tokens, greedy.tokens)
    np.testing.assert_array_equal(cold.tokens, greedy.tokens)
    # top_k=1 at T=1 reports the untruncated log-prob, i.e. the greedy one.
    np.testing.assert_allclose(top1.logprobs, greedy.logprobs, atol=1e-5)
    # T -> 0 makes the scaled distribution one-hot: log-prob -> 0.
    np.testing.assert_allclose(cold.logprobs, 0.0, atol=1e-5)


def test_stop_tokens_end_rows_and_mask_after(model):
    tokens, mask = left_pad(PROMPTS)
    full = np.asarray(sample(model, tokens, mask, jax.random.key(0), GREEDY).tokens)
    # Three stop ids: row 2 stops on its very first token.
    stops = (int(full[0, 3]), int(full[1, 5]), int(full[2, 0]))
    cfg = SamplingConfig(**_kw(GREEDY, stop_token_ids=stops, pad_token_id=255))
    out = sample(model, tokens, mask, jax.random.key(0), cfg)
    toks = np.asarray(out.tokens)
    for i in range(len(PROMPTS)):
        hits = np.flatnonzero(np.isin(full[i], stops))
        length = hits[0] + 1 if hits.size else 10
        assert out.lengths[i] == length, i
        assert out.finish_reason[i] == (0 if hits.size else 1), i
        np.testing.assert_array_equal(toks[i, :length], full[i, :length])
        assert np.all(toks[i, length:] == 255)
        np.testing.assert_array_equal(out.response_mask[i], np.arange(10) < length)
        assert np.all(np.asarray(out.logprobs)[i, length:] == 0.0)
    assert out.lengths[0] <= 4 and out.lengths[1] <= 6 and out.lengths[2] == 1
    assert out.response_lists()[2] == [stops[2]]


def test_groups_are_contiguous_and_sample_zero_matches_n1(model):
    tokens, mask = left_pad(PROMPTS)
    keys = jax.random.split(jax.random.key(3), len(PROMPTS))
    out = sample(model, tokens, mask, keys, SamplingConfig(**_kw(SAMPLED, n=3)))
    assert out.tokens.shape == (12, 10)
    np.testing.assert_array_equal(out.group_ids, np.repeat(np.arange(4), 3))
    np.testing.assert_array_equal(out.prompt_tokens, np.repeat(tokens, 3, axis=0))
    np.testing.assert_array_equal(out.prompt_mask, np.repeat(mask, 3, axis=0))
    # Samples of one prompt differ from each other.
    assert len({tuple(np.asarray(r)) for r in out.tokens[:3]}) == 3
    # Sample j of prompt b uses fold_in(key_b, j): sample 0 is the n=1 draw.
    single = sample(model, tokens, mask, keys, SAMPLED)
    np.testing.assert_array_equal(np.asarray(out.tokens)[::3], single.tokens)


def test_continuation_from_prefixes_equals_tail_of_full_decode(model):
    tokens, mask = left_pad(PROMPTS)
    full = sample(model, tokens, mask, jax.random.key(0), GREEDY)
    cut = [2, 5, 0, 7]  # different prefix lengths per row, one empty
    rows = [p + np.asarray(full.tokens[i, : cut[i]]).tolist() for i, p in enumerate(PROMPTS)]
    ct, cm = left_pad(rows)
    out = sample(model, ct, cm, jax.random.key(0), GREEDY)
    for i, c in enumerate(cut):
        np.testing.assert_array_equal(out.tokens[i, : 10 - c], full.tokens[i, c:], f"row {i}")
        np.testing.assert_allclose(out.logprobs[i, : 10 - c], full.logprobs[i, c:], atol=1e-4)


def test_one_compile_per_bucket_and_temperature_is_not_static(model):
    t1, m1 = left_pad(PROMPTS)
    sample(model, t1, m1, jax.random.key(0), GREEDY)
    sample(model, t1, m1, jax.random.key(0), SAMPLED)
    before = trace_count()
    t2, m2 = left_pad([[1, 2, 3, 4, 5, 6, 7, 8, 9], [4], [5, 6], [7] * 16])  # P=16: same bucket
    sample(model, t2, m2, jax.random.key(1), GREEDY)
    sample(model, t2, m2, jax.random.key(1), SamplingConfig(**_kw(SAMPLED, temperature=0.5)))
    assert trace_count() == before
    t3, m3 = left_pad([[1] * 17] * 4)  # P=17: next bucket (32), one new program
    sample(model, t3, m3, jax.random.key(1), GREEDY)
    assert trace_count() == before + 1


def test_input_errors(model):
    cfg = SamplingConfig(max_new_tokens=2)
    tokens = np.array([[1, 2, 3]], np.int32)
    with pytest.raises(ValueError, match="left-padded"):
        sample(model, tokens, np.array([[True, True, False]]), jax.random.key(0), cfg)
    with pytest.raises(ValueError, match="no real token"):
        sample(model, tokens, np.zeros((1, 3), bool), jax.random.key(0), cfg)
    with pytest.raises(ValueError, match="prompt_mask shape"):
        sample(model, tokens, np.ones((1, 2), bool), jax.random.key(0), cfg)
    with pytest.raises(ValueError, match="key"):
        sample(model, tokens, np.ones((1, 3), bool), jax.random.split(jax.random.key(0), 3), cfg)
    with pytest.raises(ValueError, match="max_position_embeddings"):
        sample(
            model,
            tokens,
            np.ones((1, 3), bool),
            jax.random.key(0),
            SamplingConfig(max_new_tokens=600),
        )


def test_unrolled_decode_layers_match_the_scan(model):
    """The per-layer decode path (SamplingConfig.decode_layers) is the same model: greedy
    tokens equal and log-probs equal to float32 rounding, for greedy and sampled draws with
    the same keys, on a left-padded batch where each layer writes its own cache slot."""
    tokens, mask = left_pad(PROMPTS)
    for cfg in (GREEDY, SAMPLED):
        scan = sample(model, tokens, mask, jax.random.key(3), cfg)
        unrolled = sample(
            model,
            tokens,
            mask,
            jax.random.key(3),
            SamplingConfig(**_kw(cfg, decode_layers="unrolled")),
        )
        np.testing.assert_array_equal(np.asarray(unrolled.tokens), np.asarray(scan.tokens))
        np.testing.assert_allclose(
            np.asarray(unrolled.logprobs), np.asarray(scan.logprobs), atol=1e-5, rtol=0
        )


def test_decode_layers_errors_and_auto(model):
    from jaxrl_reason.models.cache import KVCache
    from jaxrl_reason.rollout.sampler import unroll_decode_layers

    with pytest.raises(ValueError, match="decode_layers='stacked'"):
        SamplingConfig(decode_layers="stacked")
    assert unroll_decode_layers("auto", "cpu") and not unroll_decode_layers("auto", "gpu")
    assert unroll_decode_layers("unrolled", "gpu") and not unroll_decode_layers("scan", "cpu")
    cache = KVCache.init(model.config, 1, 8)
    with pytest.raises(ValueError, match="needs a cache"):
        model(jnp.ones((1, 1), jnp.int32), layers=model.per_layer_params())
    with pytest.raises(ValueError, match="layers has 1 entries"):
        model(jnp.ones((1, 1), jnp.int32), cache=cache, layers=model.per_layer_params()[:1])
