"""Dense and noisy verifiable rewards: worked examples (notes section 5) and the GRPO no-op."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_reason.rewards.dense import (
    noisy_backward_correction,
    noisy_forward_advantage,
    noisy_forward_weight,
    partial_credit,
    verpo_advantages,
    verpo_dense_reward,
    verpo_test_weights,
)

TOL = dict(rtol=0, atol=1e-6)
P = jnp.array([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]])


def _grpo(r, eps=1e-6):
    """GRPO advantage of one group (verl: unbiased std, eps 1e-6), float64."""
    r = np.asarray(r, np.float64)
    return (r - r.mean()) / (r.std(ddof=1) + eps)


class VerpoTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_worked_example(self):
        rho, nhat, w = self.variant(verpo_test_weights)(P)
        np.testing.assert_allclose(rho, [1, 0.666667, 0.333333, 0.333333], **TOL)
        np.testing.assert_allclose(nhat, [1.003866, 1.011598, 2.003866, 2.003866], **TOL)
        np.testing.assert_allclose(w, [0.366462, 0.507530, 0.357574, 0.357574], **TOL)
        adv, r_turn, r_traj = self.variant(verpo_advantages)(P)
        np.testing.assert_allclose(r_turn, [1.589141, 0.873993, 0.366462], **TOL)
        np.testing.assert_allclose(r_traj, [1, 0, 0], **TOL)
        np.testing.assert_allclose(adv, [1.312609, -0.402539, -0.910070], **TOL)
        np.testing.assert_allclose(r_turn - r_turn.mean(), [0.645943, -0.069206, -0.576736], **TOL)

    def test_batched_groups_and_padding(self):
        # a padded test (all zeros, masked) and a padded row change nothing
        p_pad = jnp.concatenate([P, jnp.zeros((3, 1), P.dtype)], 1)
        p_pad = jnp.concatenate([p_pad, jnp.ones((1, 5), P.dtype)], 0)
        tm = jnp.array([1, 1, 1, 1, 0], bool)
        rm = jnp.array([1, 1, 1, 0], bool)
        batch = jnp.stack([p_pad, p_pad])
        adv, r_turn, _ = jax.jit(verpo_advantages)(
            batch, row_mask=jnp.stack([rm, rm]), test_mask=jnp.stack([tm, tm])
        )
        np.testing.assert_allclose(adv[1, :3], [1.312609, -0.402539, -0.910070], **TOL)
        np.testing.assert_allclose(adv[:, 3], 0.0)
        np.testing.assert_allclose(r_turn[0, :3], verpo_dense_reward(P), atol=1e-6)

    def test_partial_credit(self):
        np.testing.assert_allclose(partial_credit(P), [1.0, 0.5, 0.25], **TOL)
        np.testing.assert_allclose(
            partial_credit(P, weights=jnp.array([1.0, 1.0, 2.0, 0.0])), [1.0, 0.5, 0.25], **TOL
        )
        np.testing.assert_allclose(
            partial_credit(P, test_mask=jnp.array([0, 1, 1, 1])), [1.0, 1 / 3, 0.0], **TOL
        )


class NoisyVerifierTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_worked_example(self):
        rhat = self.variant(lambda r: noisy_backward_correction(r, 0.1, 0.2))(jnp.array([1.0, 0]))
        np.testing.assert_allclose(rhat, [1.285714, -0.142857], **TOL)
        # unbiased: E[Rhat | R*=1] = 1, E[Rhat | R*=0] = 0
        np.testing.assert_allclose(0.8 * rhat[0] + 0.2 * rhat[1], 1.0, **TOL)
        np.testing.assert_allclose(0.1 * rhat[0] + 0.9 * rhat[1], 0.0, **TOL)
        w = self.variant(lambda r: noisy_forward_weight(r, 0.2))(jnp.array([1.0, 0]))
        np.testing.assert_allclose(w, [0.2, -0.8], **TOL)
        np.testing.assert_allclose(0.8 * w[0] + 0.2 * w[1], 0.0, **TOL)
        np.testing.assert_allclose(0.1 * w[0] + 0.9 * w[1], -0.7, **TOL)

    def test_softmax_toy_expected_updates(self):
        rho0, rho1 = 0.1, 0.2
        logits = jnp.log(jnp.array([0.5, 0.3, 0.2]))
        r_star = np.array([1.0, 0.0, 0.0])
        pi = jax.nn.softmax(logits)
        grad_logp = jax.jacobian(lambda z: jax.nn.log_softmax(z))(logits)  # [y, logits]
        clean = jnp.einsum("y,y,yk->k", pi, r_star, grad_logp)
        np.testing.assert_allclose(clean, [0.25, -0.15, -0.10], **TOL)

        def expected(f):  # E over y ~ pi and the noisy channel of f(R~) grad log pi(y)
            p1 = np.where(r_star > 0, 1 - rho1, rho0)  # P(R~ = 1 | y)
            e = p1 * np.asarray(f(jnp.ones(3))) + (1 - p1) * np.asarray(f(jnp.zeros(3)))
            return jnp.einsum("y,y,yk->k", pi, e, grad_logp)

        fwd = expected(lambda r: noisy_forward_weight(r, rho1))
        np.testing.assert_allclose(fwd, [0.175, -0.105, -0.070], **TOL)
        np.testing.assert_allclose(fwd, 0.7 * clean, **TOL)
        bwd = expected(lambda r: noisy_backward_correction(r, rho0, rho1))
        np.testing.assert_allclose(bwd, clean, **TOL)

    def test_grpo_normalisation_cancels_both_corrections(self):
        r = np.array([1.0, 0.0, 0.0, 1.0])
        rhat = np.asarray(noisy_backward_correction(r, 0.1, 0.2), np.float64)
        w = np.asarray(noisy_forward_weight(r, 0.2), np.float64)
        want = [0.866025, -0.866025, -0.866025, 0.866025]
        for x in (r, rhat, w):  # the notes' cancellation check (no eps)
            np.testing.assert_allclose(_grpo(x, 0.0), want, **TOL)
            # verl's eps = 1e-6 in the denominator is the only (O(eps)) difference
            np.testing.assert_allclose(_grpo(x), _grpo(r), rtol=0, atol=1e-5)
        # Exact (float64 rounding only) without eps, on random groups and rates.
        rng = np.random.default_rng(0)
        for _ in range(50):
            r = rng.integers(0, 2, 8).astype(np.float64)
            if r.min() == r.max():
                continue
            rho0, rho1 = rng.uniform(0, 0.45, 2)
            rhat = (r - rho0) / (1 - rho0 - rho1)  # float64 copies of the same maps
            w = np.where(r > 0.5, rho1, rho1 - 1)
            np.testing.assert_allclose(_grpo(rhat, 0.0), _grpo(r, 0.0), rtol=0, atol=1e-12)
            np.testing.assert_allclose(_grpo(w, 0.0), _grpo(r, 0.0), rtol=0, atol=1e-12)
            np.testing.assert_allclose(
                np.asarray(noisy_backward_correction(r, rho0, rho1)), rhat, rtol=1e-6
            )

    def test_where_the_correction_acts(self):
        r = np.array([1.0, 0.0, 0.0, 1.0])
        fmt = np.array([1.0, 1.0, 0.0, 0.0])
        rhat = np.asarray(noisy_backward_correction(r, 0.1, 0.2), np.float64)
        # mixed with another reward before normalisation: the advantages change
        assert np.abs(_grpo(rhat + 0.5 * fmt) - _grpo(r + 0.5 * fmt)).max() > 1e-2
        # used directly as the advantage (no baseline): w, broadcast over the response
        adv = noisy_forward_advantage(jnp.asarray(r), jnp.array([[1, 1, 0]] * 4), 0.2)
        np.testing.assert_allclose(adv[:, 0], [0.2, -0.8, -0.8, 0.2], **TOL)
        np.testing.assert_allclose(adv[:, 2], 0.0)

    def test_bad_rates(self):
        with pytest.raises(ValueError, match="sum to less than 1"):
            noisy_backward_correction(jnp.ones(2), 0.6, 0.5)
        with pytest.raises(ValueError, match="rho_1"):
            noisy_forward_weight(jnp.ones(2), 1.0)
