"""The per-step sampling rule: greedy, temperature, top-k, top-p and the returned log-probs."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized
from scipy import stats

from jaxrl_reason.rollout import SamplingConfig, bucket_length, left_pad, sample_token

LOGITS = np.array([2.0, 1.0, 0.5, 0.0, -1.0, -3.0], np.float32)


def _expected_probs(logits, temperature=1.0, top_k=0, top_p=1.0):
    """NumPy float64 reference of temperature -> top-k -> top-p (HF / vLLM order)."""
    z = logits.astype(np.float64) / temperature
    keep = np.ones_like(z, bool)
    if top_k:
        keep &= z >= np.sort(z)[::-1][top_k - 1]
    p = np.where(keep, np.exp(z - z.max()), 0.0)
    p /= p.sum()
    if top_p < 1.0:
        order = np.argsort(-p)
        before = np.cumsum(p[order]) - p[order]
        kept = order[before < top_p]
        keep2 = np.zeros_like(keep)
        keep2[kept] = True
        p = np.where(keep2, p, 0.0)
        p /= p.sum()
    return p


class SampleTokenTest(parameterized.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_greedy_is_argmax_with_temperature_one_logprob(self):
        logits = jnp.array([[0.1, 3.0, -1.0, 2.9], [5.0, 0.0, 0.0, 0.0]], jnp.float32)
        cfg = SamplingConfig(greedy=True, temperature=0.3)  # temperature ignored when greedy
        keys = jax.random.split(jax.random.key(0), 2)
        tok, lp = self.variant(lambda lg, k: sample_token(lg, k, cfg))(logits, keys)
        np.testing.assert_array_equal(tok, [1, 0])
        want = jax.nn.log_softmax(logits, -1)[jnp.arange(2), jnp.array([1, 0])]
        np.testing.assert_allclose(lp, want, atol=1e-6)
        # Hand value for row 1: log(e^5 / (e^5 + 3)).
        np.testing.assert_allclose(lp[1], 5.0 - np.log(np.exp(5.0) + 3.0), atol=1e-6)

    @parameterized.parameters(
        dict(temperature=1.0, top_k=0, top_p=1.0),
        dict(temperature=0.7, top_k=3, top_p=1.0),
        dict(temperature=1.5, top_k=0, top_p=0.8),
        dict(temperature=1.0, top_k=4, top_p=0.9),
    )
    def test_frequencies_match_probabilities(self, temperature, top_k, top_p):
        cfg = SamplingConfig(temperature=temperature, top_k=top_k, top_p=top_p)
        draws = 20_000
        logits = jnp.broadcast_to(jnp.asarray(LOGITS), (draws, LOGITS.size))
        keys = jax.random.split(jax.random.key(1234), draws)
        tok, lp = jax.jit(lambda lg, k: sample_token(lg, k, cfg))(logits, keys)
        counts = np.bincount(np.asarray(tok), minlength=LOGITS.size)
        p = _expected_probs(LOGITS, temperature, top_k, top_p)
        # Truncated tokens are never drawn.
        self.assertEqual(counts[p == 0].sum(), 0)
        kept = p > 0
        chi2, pvalue = stats.chisquare(counts[kept], draws * p[kept])
        self.assertGreater(pvalue, 1e-3, f"counts {counts} vs expected {draws * p}")
        # The log-prob is of the *untruncated* temperature-scaled distribution.
        full = np.log(_expected_probs(LOGITS, temperature))
        np.testing.assert_allclose(lp, full[np.asarray(tok)], atol=1e-5)

    def test_top_k_one_and_tiny_temperature_are_greedy(self):
        logits = jax.random.normal(jax.random.key(3), (64, 50))
        keys = jax.random.split(jax.random.key(4), 64)
        greedy = np.asarray(jnp.argmax(logits, -1))
        for cfg in (SamplingConfig(top_k=1), SamplingConfig(temperature=1e-6)):
            tok, _ = jax.jit(lambda lg, k, cfg=cfg: sample_token(lg, k, cfg))(logits, keys)
            np.testing.assert_array_equal(tok, greedy)

    def test_tiny_top_p_keeps_only_the_mode(self):
        logits = jax.random.normal(jax.random.key(5), (32, 40))
        keys = jax.random.split(jax.random.key(6), 32)
        cfg = SamplingConfig(top_p=1e-4)
        tok, _ = jax.jit(lambda lg, k: sample_token(lg, k, cfg))(logits, keys)
        np.testing.assert_array_equal(tok, np.asarray(jnp.argmax(logits, -1)))

    def test_raw_uint32_keys_accepted(self):
        logits = jnp.zeros((3, 7))
        raw = jax.random.split(jax.random.PRNGKey(0), 3)  # uint32[3, 2]
        typed = jax.random.wrap_key_data(raw)
        draw = jax.jit(lambda lg, k: sample_token(lg, k, SamplingConfig())[0])
        np.testing.assert_array_equal(draw(logits, raw), draw(logits, typed))


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(max_new_tokens=0), "max_new_tokens"),
        (dict(temperature=0.0), "temperature"),
        (dict(top_k=-1), "top_k"),
        (dict(top_p=0.0), "top_p"),
        (dict(top_p=1.5), "top_p"),
        (dict(n=0), "n"),
    ],
)
def test_config_errors_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        SamplingConfig(**kwargs)


def test_greedy_allows_zero_temperature_and_stop_ids_normalised():
    cfg = SamplingConfig(greedy=True, temperature=0.0, stop_token_ids=[3, 4])
    assert cfg.stop_token_ids == (3, 4)
    assert SamplingConfig(stop_token_ids=7).stop_token_ids == (7,)


def test_categorical_across_blocks_and_at_the_edges():
    from jaxrl_reason.rollout.sampler import _categorical

    vocab = 1000  # 8 blocks of 128, the last one partial
    support = np.array([0, 5, 127, 128, 500, 700, 995, 997])
    mass = np.array([1.0, 2.0, 0.5, 3.0, 1.5, 0.25, 2.0, 1.75])
    w = np.zeros(vocab, np.float32)
    w[support] = mass
    draws = 40_000
    u = jax.random.uniform(jax.random.key(9), (draws,))
    tok = np.asarray(jax.jit(_categorical)(jnp.broadcast_to(jnp.asarray(w), (draws, vocab)), u))
    counts = np.bincount(tok, minlength=vocab)
    assert counts.sum() == counts[support].sum()  # never a zero-weight token
    _, pvalue = stats.chisquare(counts[support], draws * mass / mass.sum())
    assert pvalue > 1e-3, counts[support]
    # u = 0 and u just below 1 pick the first and the last supported token.
    edge = jax.jit(_categorical)(jnp.stack([jnp.asarray(w)] * 2), jnp.array([0.0, 1 - 2**-24]))
    np.testing.assert_array_equal(edge, [0, 997])
    # Inverse CDF: with w = [1, 1, 2], u in [0, .25) -> 0, [.25, .5) -> 1, [.5, 1) -> 2.
    w3 = jnp.broadcast_to(jnp.array([1.0, 1.0, 2.0]), (5, 3))
    np.testing.assert_array_equal(
        jax.jit(_categorical)(w3, jnp.array([0.1, 0.26, 0.49, 0.5, 0.99])), [0, 1, 1, 2, 2]
    )


def test_left_pad():
    tokens, mask = left_pad([[5, 6, 7], [8], []], pad_id=9)
    np.testing.assert_array_equal(tokens, [[5, 6, 7], [9, 9, 8], [9, 9, 9]])
    np.testing.assert_array_equal(mask, [[1, 1, 1], [0, 0, 1], [0, 0, 0]])
    assert tokens.dtype == np.int32 and mask.dtype == bool
    tokens, _ = left_pad([[1, 2]], length=4)
    np.testing.assert_array_equal(tokens, [[0, 0, 1, 2]])
    with pytest.raises(ValueError, match="length"):
        left_pad([[1, 2, 3]], length=2)


def test_bucket_length():
    assert [bucket_length(p) for p in (1, 16, 17, 33, 100, 128, 129, 300)] == [
        16, 16, 32, 64, 128, 128, 256, 384,
    ]  # fmt: skip
    assert bucket_length(37, bucket=0) == 37
