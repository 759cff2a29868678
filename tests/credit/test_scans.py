"""Reverse discounted scans: hand-derived values, mask semantics, GAE identities."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_reason import credit


def _trailing_mask(rng, b, t):
    lengths = rng.integers(0, t + 1, size=b)
    return (np.arange(t)[None, :] < lengths[:, None]).astype(np.float32)


class DiscountedReturnsTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_hand_values(self):
        fn = self.variant(credit.discounted_returns)
        # G2 = 3, G1 = 2 + 0.5 * 3 = 3.5, G0 = 1 + 0.5 * 3.5 = 2.75
        out = fn(jnp.array([[1.0, 2.0, 3.0]]), jnp.ones((1, 3)), 0.5)
        np.testing.assert_allclose(out, [[2.75, 3.5, 3.0]])
        assert out.dtype == jnp.float32

    @chex.variants(with_jit=True, without_jit=True)
    def test_reset_on_mask_like_verl(self):
        r = jnp.ones((1, 4))
        m = jnp.array([[1, 1, 0, 1]])
        reset = self.variant(credit.discounted_returns)(r, m, 1.0)
        # The observation token at t=2 cuts the return: G3 = 1, G1 = 1, G0 = 2.
        np.testing.assert_allclose(reset, [[2.0, 1.0, 0.0, 1.0]])
        carry = self.variant(functools.partial(credit.discounted_returns, reset_on_mask=False))(
            r, m, 1.0
        )
        # Carried through (its own reward ignored): G1 = 1 + 1, G0 = 1 + 2.
        np.testing.assert_allclose(carry, [[3.0, 2.0, 0.0, 1.0]])

    @chex.variants(with_jit=True, without_jit=True)
    def test_padding_rewards_ignored_and_empty_mask(self):
        fn = self.variant(credit.discounted_returns)
        out = fn(
            jnp.array([[0.0, 1.0, 5.0], [7.0, 7.0, 7.0]]), jnp.array([[1, 1, 0], [0, 0, 0]]), 1.0
        )
        np.testing.assert_allclose(out, [[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])

    def test_traced_gamma(self):
        fn = jax.jit(credit.discounted_returns)
        r, m = jnp.array([[0.0, 0.0, 4.0]]), jnp.ones((1, 3))
        np.testing.assert_allclose(fn(r, m, jnp.float32(0.5)), [[1.0, 2.0, 4.0]])
        np.testing.assert_allclose(fn(r, m, jnp.float32(1.0)), [[4.0, 4.0, 4.0]])

    def test_shape_errors(self):
        with pytest.raises(ValueError, match="mask"):
            credit.discounted_returns(jnp.ones((2, 3)), jnp.ones((2, 4)), 1.0)
        with pytest.raises(ValueError, match=r"\[B, T\]"):
            credit.discounted_returns(jnp.ones((3,)), jnp.ones((3,)), 1.0)


class GaeScanTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_hand_values(self):
        fn = self.variant(credit.gae_scan)
        r = jnp.array([[0.0, 0.0, 8.0]])
        v = jnp.array([[1.0, 2.0, 4.0]])
        adv, ret = fn(r, v, jnp.ones((1, 3)), 0.5, 0.5)
        # delta2 = 8 - 4 = 4, A2 = 4; delta1 = 0.5*4 - 2 = 0, A1 = 0.25*4 = 1;
        # delta0 = 0.5*2 - 1 = 0, A0 = 0.25*1 = 0.25.
        np.testing.assert_allclose(adv, [[0.25, 1.0, 4.0]])
        np.testing.assert_allclose(ret, [[1.25, 3.0, 8.0]])

    @chex.variants(with_jit=True, without_jit=True)
    def test_mid_sequence_mask_is_skipped_like_verl(self):
        fn = self.variant(credit.gae_scan)
        r = jnp.array([[0.0, 100.0, 8.0]])  # the observation token's reward is ignored
        v = jnp.array([[1.0, 50.0, 4.0]])  # and so is its value
        adv, ret = fn(r, v, jnp.array([[1, 0, 1]]), 0.5, 0.5)
        # A2 = 4; t=1 skipped; delta0 = 0 + 0.5*V2 - V0 = 1, A0 = 1 + 0.25*A2 = 2.
        np.testing.assert_allclose(adv, [[2.0, 0.0, 4.0]])
        np.testing.assert_allclose(ret, [[3.0, 0.0, 8.0]])

    @chex.variants(with_jit=True, without_jit=True)
    def test_lam_one_is_returns_minus_values(self):
        rng = np.random.default_rng(0)
        r = rng.normal(size=(5, 7)).astype(np.float32)
        v = rng.normal(size=(5, 7)).astype(np.float32)
        m = _trailing_mask(rng, 5, 7)
        for gamma in (1.0, 0.9):
            adv, ret = self.variant(credit.gae_scan)(r, v, m, gamma, 1.0)
            g = credit.discounted_returns(r, m, gamma)
            np.testing.assert_allclose(adv, (g - v) * m, rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(ret, g, rtol=1e-5, atol=1e-5)

    @chex.variants(with_jit=True, without_jit=True)
    def test_lam_zero_is_td_error(self):
        rng = np.random.default_rng(1)
        r = rng.normal(size=(3, 5)).astype(np.float32)
        v = rng.normal(size=(3, 5)).astype(np.float32)
        m = np.ones((3, 5), np.float32)
        adv, _ = self.variant(credit.gae_scan)(r, v, m, 0.9, 0.0)
        v_next = np.concatenate([v[:, 1:], np.zeros((3, 1), np.float32)], axis=1)
        np.testing.assert_allclose(adv, r + 0.9 * v_next - v, rtol=1e-5, atol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    def test_empty_mask_gives_zeros(self):
        adv, ret = self.variant(credit.gae_scan)(
            jnp.ones((2, 3)), jnp.ones((2, 3)), jnp.zeros((2, 3)), 1.0, 0.95
        )
        np.testing.assert_array_equal(adv, 0.0)
        np.testing.assert_array_equal(ret, 0.0)
