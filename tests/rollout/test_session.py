"""rollout.session: start / fork / extend / generate against the sampler and full forwards."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxrl_reason.models import Transformer
from jaxrl_reason.rollout import SamplingConfig, left_pad, sample
from jaxrl_reason.rollout import session as ses
from tests.rollout.tiny import scaled_tiny_model

PROMPTS = [[1, 5, 6, 7], [1, 9], [3, 4, 5, 6, 7, 8, 9], [1, 200, 17]]
STEPS = 8
# prompt_bucket=0: the sampler keeps the exact prompt width, so its cache has P + STEPS slots
# like the session's and both run the same shapes (bit-identical arithmetic).
SAMPLED = SamplingConfig(
    max_new_tokens=STEPS, temperature=0.9, top_k=50, stop_token_ids=(), prompt_bucket=0
)
GREEDY = SamplingConfig(max_new_tokens=STEPS, greedy=True, stop_token_ids=(), prompt_bucket=0)


@pytest.fixture(scope="module")
def model():
    """tiny_debug with an untied head and larger weights (as in test_sampler): peaked,
    context-dependent next-token distributions, so wrong caches or positions show."""

    return scaled_tiny_model(layer_scale=10.0, head_scale=15.0)


@functools.cache
def _forward(graphdef):
    return jax.jit(lambda s, t: nnx.merge(graphdef, s)(t)[0])


def _next_logits(model, seq, width=32):
    """Logits of the token after ``seq`` from a full forward without cache or padding."""
    graphdef, state = nnx.split(model)
    buf = np.zeros((1, width), np.int32)
    buf[0, : len(seq)] = seq
    return np.asarray(_forward(graphdef)(state, jnp.asarray(buf))[len(seq) - 1])


def _row_keys(prompt_keys, n):
    """The sampler's per-row keys: fold_in(prompt_key[b], j) for row b * n + j."""
    j = jnp.tile(jnp.arange(n, dtype=jnp.uint32), prompt_keys.shape[0])
    return jax.vmap(jax.random.fold_in)(jnp.repeat(prompt_keys, n, axis=0), j)


def test_start_generate_equals_sample(model):
    tokens, mask = left_pad(PROMPTS)
    pkeys = jax.random.split(jax.random.key(3), len(PROMPTS))
    ref = sample(model, tokens, mask, pkeys, SAMPLED)
    s = ses.start(model, tokens, mask, max_len=tokens.shape[1] + STEPS)
    s, toks, lps, lens, fin = ses.generate(model, s, _row_keys(pkeys, 1), SAMPLED, steps=STEPS)
    np.testing.assert_array_equal(toks, ref.tokens)
    np.testing.assert_allclose(lps, ref.logprobs, atol=1e-6)
    np.testing.assert_array_equal(lens, ref.lengths)
    np.testing.assert_array_equal(fin, ref.finish_reason)
    assert toks.dtype == jnp.int32 and lps.dtype == jnp.float32
    # Every drawn token was fed: the cache is full and each row's position advanced.
    assert ses.capacity(s) == 0
    np.testing.assert_array_equal(s.num_real, mask.sum(1) + STEPS)


def test_unrolled_decode_layers_generate_equals_the_scan(model, monkeypatch):
    """rollout.decode_layers reaches the session's decode loop too (tree, vine and env
    strategies): per-layer weights give the same draws as the stacked scan, log-probs to
    float32 rounding."""
    tokens, mask = left_pad(PROMPTS)
    keys = _row_keys(jax.random.split(jax.random.key(5), len(PROMPTS)), 1)
    cuts = []
    cut = Transformer.per_layer_params
    monkeypatch.setattr(Transformer, "per_layer_params", lambda m: cuts.append(1) or cut(m))
    out = {}
    for mode in ("scan", "unrolled"):
        cfg = dataclasses.replace(SAMPLED, decode_layers=mode)
        s = ses.start(model, tokens, mask, max_len=tokens.shape[1] + STEPS)
        s, toks, lps, lens, _ = ses.generate(model, s, keys, cfg, steps=STEPS)
        out[mode] = (np.asarray(toks), np.asarray(lps), np.asarray(s.cache.k))
        assert len(cuts) == (mode == "unrolled")  # the per-layer path was taken
    np.testing.assert_array_equal(out["unrolled"][0], out["scan"][0])
    np.testing.assert_allclose(out["unrolled"][1], out["scan"][1], atol=1e-5, rtol=0)
    # Every layer wrote its own keys into the cache (not, e.g., all into layer 0).
    np.testing.assert_allclose(out["unrolled"][2], out["scan"][2], atol=1e-5, rtol=0)


def test_n_samples_via_fork_and_stop_tokens_equal_sample(model):
    """n > 1 through fork (one prefill per prompt) with a stop token that ends some rows."""
    tokens, mask = left_pad(PROMPTS)
    pkeys = jax.random.split(jax.random.key(4), len(PROMPTS))
    free = sample(model, tokens, mask, pkeys, dataclasses.replace(SAMPLED, n=2))
    stop = int(np.asarray(free.tokens)[0, 2])  # a token that row 0 draws at step 2
    cfg = dataclasses.replace(SAMPLED, n=2, stop_token_ids=(stop,))
    ref = sample(model, tokens, mask, pkeys, cfg)
    assert int(ref.lengths[0]) <= 3 and int(ref.finish_reason[0]) == 0
    s = ses.start(model, tokens, mask, max_len=tokens.shape[1] + STEPS)
    s = ses.fork(s, np.repeat(np.arange(len(PROMPTS)), 2))
    s, toks, lps, lens, fin = ses.generate(model, s, _row_keys(pkeys, 2), cfg, steps=STEPS)
    np.testing.assert_array_equal(toks, ref.tokens)
    np.testing.assert_allclose(lps, ref.logprobs, atol=1e-6)
    np.testing.assert_array_equal(lens, ref.lengths)
    np.testing.assert_array_equal(fin, ref.finish_reason)
    np.testing.assert_array_equal(s.num_real, np.repeat(mask.sum(1), 2) + np.asarray(lens))


def test_continuation_equals_tail_of_one_decode(model):
    """generate k tokens, then the rest with the same keys and step_offset=k: the same draws
    as one call of k + rest tokens; and extend(prefix) + generate equals sample(prompt+prefix)."""
    tokens, mask = left_pad(PROMPTS)
    keys = _row_keys(jax.random.split(jax.random.key(5), len(PROMPTS)), 1)
    width = tokens.shape[1] + STEPS
    _, full, full_lp, *_ = ses.generate(
        model, ses.start(model, tokens, mask, max_len=width), keys, SAMPLED, steps=STEPS
    )
    k = 3
    s = ses.start(model, tokens, mask, max_len=width)
    s, head, head_lp, *_ = ses.generate(model, s, keys, SAMPLED, steps=k)
    s, tail, tail_lp, *_ = ses.generate(model, s, keys, SAMPLED, steps=STEPS - k, step_offset=k)
    np.testing.assert_array_equal(np.concatenate([head, tail], 1), full)
    np.testing.assert_allclose(np.concatenate([head_lp, tail_lp], 1), full_lp, atol=1e-5)

    # start(prompt) + extend(prefix, right-padded) + generate == sample(prompt + prefix).
    prefixes = [[11, 12, 13], [14], [15, 16], []]
    ext = np.zeros((len(PROMPTS), 3), np.int32)
    ext_mask = np.zeros((len(PROMPTS), 3), bool)
    for i, p in enumerate(prefixes):
        ext[i, : len(p)], ext_mask[i, : len(p)] = p, True
    s = ses.start(model, tokens, mask, max_len=width + 3)
    s = ses.extend(model, s, ext, ext_mask)
    pkeys = jax.random.split(jax.random.key(6), len(PROMPTS))
    s, toks, lps, lens, _ = ses.generate(model, s, _row_keys(pkeys, 1), SAMPLED, steps=STEPS)
    t2, m2 = left_pad([a + b for a, b in zip(PROMPTS, prefixes, strict=True)])
    ref = sample(model, t2, m2, pkeys, SAMPLED)
    np.testing.assert_array_equal(toks, ref.tokens)
    np.testing.assert_allclose(lps, ref.logprobs, atol=1e-4)


def test_fork_then_generate_equals_each_row_alone(model):
    tokens, mask = left_pad(PROMPTS)
    s = ses.start(model, tokens, mask, max_len=tokens.shape[1] + 2 * STEPS)
    # A first generate with row 1 inactive: row 1 must be as if the call never happened.
    k0 = _row_keys(jax.random.split(jax.random.key(7), 4), 1)
    s, first, _, first_len, first_fin = ses.generate(
        model, s, k0, SAMPLED, steps=STEPS, active=np.array([True, False, True, True])
    )
    assert int(first_len[1]) == 0 and int(first_fin[1]) == ses.FINISH_INACTIVE
    assert np.all(np.asarray(first)[1] == 0)
    rows = np.array([2, 0, 2, 1, 1])
    s2 = ses.fork(s, rows)
    keys = _row_keys(jax.random.split(jax.random.key(8), len(rows)), 1)
    _, toks, lps, _, _ = ses.generate(model, s2, keys, SAMPLED, steps=STEPS)
    for i, r in enumerate(rows):
        seq = PROMPTS[r] + np.asarray(first)[r, : int(first_len[r])].tolist()
        alone = ses.start(model, np.array([seq]), np.ones((1, len(seq)), bool), max_len=40)
        _, t1, lp1, _, _ = ses.generate(model, alone, keys[i : i + 1], SAMPLED, steps=STEPS)
        np.testing.assert_array_equal(toks[i], t1[0], err_msg=f"row {i}")
        np.testing.assert_allclose(lps[i], lp1[0], atol=1e-4, err_msg=f"row {i}")


def test_extend_partially_masked_rows_equals_unpadded_forward(model):
    tokens, mask = left_pad(PROMPTS)
    s = ses.start(model, tokens, mask, max_len=tokens.shape[1] + 10)
    ext = np.array(
        [[20, 21, 22, 23, 24], [0, 0, 30, 31, 0], [40, 0, 41, 0, 42], [0, 0, 0, 0, 0]], np.int32
    )
    ext_mask = ext != 0
    before = np.asarray(s.last_hidden)
    s = ses.extend(model, s, ext, ext_mask)
    s = ses.extend(model, s, ext[:, ::-1], ext_mask[:, ::-1])  # a second call on top
    w = np.asarray(model.lm_head_weight())
    logits = np.asarray(s.last_hidden) @ w
    for i, p in enumerate(PROMPTS):
        real = ext[i][ext_mask[i]].tolist()
        seq = p + real + real[::-1]
        np.testing.assert_allclose(logits[i], _next_logits(model, seq), atol=1e-4, rtol=1e-4)
        assert int(s.num_real[i]) == len(seq)
    np.testing.assert_array_equal(np.asarray(s.last_hidden)[3], before[3])  # all-masked row


def test_stop_sequences_stop_right_after_the_sequence(model):
    tokens, mask = left_pad(PROMPTS)
    width = tokens.shape[1] + STEPS
    s0 = ses.start(model, tokens, mask, max_len=width + STEPS)
    _, free, *_ = ses.generate(
        model, s0, _row_keys(jax.random.split(jax.random.key(0), 4), 1), GREEDY, steps=STEPS
    )
    free = np.asarray(free)
    seq = tuple(int(t) for t in free[0, 2:4])  # row 0 ends it at step 3
    never = (255, 255, 255)
    keys = _row_keys(jax.random.split(jax.random.key(0), 4), 1)
    s, toks, _, lens, fin = ses.generate(
        model, s0, keys, GREEDY, steps=STEPS, stop_sequences=(never, seq)
    )
    first = next(t for t in range(1, STEPS) if tuple(free[0, t - 1 : t + 1]) == seq)
    assert int(lens[0]) == first + 1 and int(fin[0]) == ses.FINISH_STOP_SEQUENCE + 1
    np.testing.assert_array_equal(np.asarray(toks)[0, : first + 1], free[0, : first + 1])
    assert np.all(np.asarray(toks)[0, first + 1 :] == 0)
    # The stop sequence is in the cache: continuing equals decoding from prompt + response.
    s, more, *_ = ses.generate(model, s, keys, GREEDY, steps=3)
    seq0 = PROMPTS[0] + free[0, : first + 1].tolist()
    expected = int(np.argmax(_next_logits(model, seq0)))
    assert int(np.asarray(more)[0, 0]) == expected


def test_capacity_errors(model):
    tokens, mask = left_pad(PROMPTS)
    s = ses.start(model, tokens, mask, max_len=tokens.shape[1] + 2)
    keys = _row_keys(jax.random.split(jax.random.key(0), 4), 1)
    with pytest.raises(ValueError, match="KV-cache slots"):
        ses.generate(model, s, keys, GREEDY, steps=3)
    with pytest.raises(ValueError, match="KV-cache slots"):
        ses.extend(model, s, np.ones((4, 3), np.int32), np.ones((4, 3), bool))
    with pytest.raises(ValueError, match="max_len"):
        ses.start(model, tokens, mask, max_len=2)
    with pytest.raises(ValueError, match="rows"):
        ses.fork(s, [0, 4])
