"""Pure building blocks: attention with masks, RoPE, RMSNorm (with and without jit)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_reason.models.transformer import apply_rope, attention, rms_norm, rope_cos_sin


def _naive_attention(q, k, v, allowed):
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    H, K = q.shape[2], k.shape[2]
    k = np.repeat(k, H // K, axis=2)
    v = np.repeat(v, H // K, axis=2)
    out = np.zeros_like(q)
    for b in range(q.shape[0]):
        for h in range(H):
            s = q[b, :, h] @ k[b, :, h].T / np.sqrt(q.shape[-1])
            for t in range(q.shape[1]):
                keep = np.asarray(allowed[b, t])
                if keep.any():
                    w = np.exp(s[t, keep] - s[t, keep].max())
                    out[b, t, h] = (w / w.sum()) @ v[b, keep, h]
    return out


class AttentionTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_matches_naive_gqa_with_fully_masked_rows(self):
        rng = np.random.default_rng(0)
        q = rng.normal(size=(2, 4, 6, 8)).astype(np.float32)
        k = rng.normal(size=(2, 5, 2, 8)).astype(np.float32)
        v = rng.normal(size=(2, 5, 2, 8)).astype(np.float32)
        allowed = rng.random((2, 4, 5)) < 0.6
        allowed[0, 1] = False  # a query that sees nothing (left padding)
        out = self.variant(attention)(q, k, v, jnp.asarray(allowed))
        chex.assert_shape(out, (2, 4, 6, 8))
        np.testing.assert_allclose(out, _naive_attention(q, k, v, allowed), atol=1e-5)
        np.testing.assert_array_equal(out[0, 1], 0.0)

    @chex.variants(with_jit=True, without_jit=True)
    def test_gradients_finite_with_fully_masked_rows(self):
        q = jnp.ones((1, 3, 2, 4))
        kv = jnp.ones((1, 3, 1, 4))
        allowed = jnp.asarray([[[False] * 3, [True, False, False], [True, True, True]]])
        grad = self.variant(jax.grad(lambda q, k: attention(q, k, k, allowed).sum(), (0, 1)))
        gq, gk = grad(q, kv)
        assert np.isfinite(np.asarray(gq)).all() and np.isfinite(np.asarray(gk)).all()
        np.testing.assert_array_equal(gq[0, 0], 0.0)


class RopeNormTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_rope_rotates_pairs_i_and_i_plus_half(self):
        # Dh=4, theta=100: frequencies 1 and 0.1; x = e_0 rotates into column 2 (rotate-half).
        pos = jnp.asarray([[0, 1, 3]], jnp.int32)
        x = jnp.zeros((1, 3, 1, 4)).at[..., 0].set(1.0)
        out = self.variant(lambda x, p: apply_rope(x, *rope_cos_sin(p, 4, 100.0)))(x, pos)
        expected = np.zeros((3, 4))
        expected[:, 0] = np.cos([0.0, 1.0, 3.0])
        expected[:, 2] = np.sin([0.0, 1.0, 3.0])
        np.testing.assert_allclose(out[0, :, 0], expected, atol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    def test_rms_norm_hand_value(self):
        x = jnp.asarray([[3.0, 4.0]])  # mean square 12.5
        out = self.variant(lambda x: rms_norm(x, jnp.asarray([1.0, 2.0]), 0.0))(x)
        np.testing.assert_allclose(out, [[3 / np.sqrt(12.5), 8 / np.sqrt(12.5)]], rtol=1e-6)
