"""Advantage scans: every implementation against the reference and a literal verl port."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_reason.kernels import discounted_cumsum, gae
from jaxrl_reason.kernels.advantage_scan import pallas as scan_pallas

IMPLS = ["xla", "associative", "pallas"]


def _verl_gae_numpy(r, v, m, gamma, lam):
    """Line-by-line numpy port of verl's ``compute_gae_advantage_return`` loop (2026-01)."""
    nextvalues = np.zeros(r.shape[0])
    lastgaelam = np.zeros(r.shape[0])
    out = []
    for t in reversed(range(r.shape[1])):
        delta = r[:, t] + gamma * nextvalues - v[:, t]
        lastgaelam_ = delta + gamma * lam * lastgaelam
        nextvalues = v[:, t] * m[:, t] + (1 - m[:, t]) * nextvalues
        lastgaelam = lastgaelam_ * m[:, t] + (1 - m[:, t]) * lastgaelam
        out.append(lastgaelam)
    adv = np.stack(out[::-1], axis=1)
    return adv, adv + v


def _inputs(key, b, t):
    k = jax.random.split(key, 3)
    r = jax.random.normal(k[0], (b, t))
    v = jax.random.normal(k[1], (b, t))
    # Holes inside sequences (observation tokens) and right padding.
    m = jax.random.bernoulli(k[2], 0.7, (b, t)) & (jnp.arange(t)[None, :] < t - 2)
    return r, v, m


@pytest.mark.parametrize("impl", ["reference", *IMPLS])
@pytest.mark.parametrize("gamma,lam", [(0.95, 0.9), (1.0, 0.95)])
def test_gae_matches_verl_on_masked_tokens(impl, gamma, lam):
    r, v, m = _inputs(jax.random.key(0), 5, 19)  # odd B, T: not multiples of any block
    adv, ret = gae(r, v, m, gamma=gamma, lam=lam, impl=impl)
    va, vr = _verl_gae_numpy(
        np.asarray(r, np.float64), np.asarray(v, np.float64), np.asarray(m, np.float64), gamma, lam
    )
    mm = np.asarray(m)
    np.testing.assert_allclose(np.asarray(adv)[mm], va[mm], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(ret)[mm], vr[mm], rtol=1e-5, atol=1e-5)
    assert np.all(np.asarray(adv)[~mm] == 0) and np.all(np.asarray(ret)[~mm] == 0)


def test_gae_hand_example_skips_observation_token():
    # t=2: delta = 1 - 0.1 = 0.9, A = 0.9. t=1 masked: skipped.
    # t=0: delta = 0 + 0.9 * V_2 - V_0 = 0.09 - 0.5 = -0.41; A = -0.41 + 0.72 * 0.9 = 0.238.
    r = jnp.array([[0.0, 5.0, 1.0]])
    v = jnp.array([[0.5, 0.2, 0.1]])
    m = jnp.array([[True, False, True]])
    for impl in ["reference", *IMPLS]:
        adv, ret = gae(r, v, m, gamma=0.9, lam=0.8, impl=impl)
        np.testing.assert_allclose(adv, [[0.238, 0.0, 0.9]], atol=1e-6)
        np.testing.assert_allclose(ret, [[0.738, 0.0, 1.0]], atol=1e-6)


def test_discounted_cumsum_hand_example():
    x = jnp.array([[1.0, 2.0, 3.0, 7.0], [1.0, 9.0, 1.0, 0.0]])
    m = jnp.array([[True, True, True, False], [True, False, True, True]])
    for impl in ["reference", *IMPLS]:
        y = discounted_cumsum(x, m, gamma=0.5, impl=impl)
        # Row 0: 3; 2 + 1.5 = 3.5; 1 + 1.75 = 2.75. Row 1 skips the 9: [1.5, 0, 1, 0].
        np.testing.assert_allclose(y, [[2.75, 3.5, 3.0, 0.0], [1.5, 0.0, 1.0, 0.0]], atol=1e-6)


class TestVariants(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_discounted_cumsum_equals_gae_with_zero_values(self):
        r, _, m = _inputs(jax.random.key(2), 4, 17)
        for impl in IMPLS:
            f = self.variant(lambda r, m, impl=impl: discounted_cumsum(r, m, gamma=0.9, impl=impl))
            y = f(r, m)
            a, _ = _verl_gae_numpy(np.asarray(r), np.zeros(r.shape), np.asarray(m, float), 0.9, 1.0)
            a = np.where(np.asarray(m), a, 0.0)
            np.testing.assert_allclose(y, a, rtol=1e-5, atol=1e-5)


def test_bad_inputs():
    r = jnp.zeros((2, 3))
    with pytest.raises(ValueError, match="values must have the shape"):
        gae(r, jnp.zeros((2, 4)), r > 0, gamma=1.0, lam=1.0)
    with pytest.raises(ValueError, match=r"\[B, T\]"):
        gae(jnp.zeros(3), jnp.zeros(3), jnp.ones(3), gamma=1.0, lam=1.0)
    with pytest.raises(ValueError, match="gamma"):
        discounted_cumsum(r, r > 0, gamma=1.5)
    with pytest.raises(ValueError, match="impl"):
        discounted_cumsum(r, r > 0, gamma=0.5, impl="cuda")


@pytest.mark.parametrize("platform", ["cuda", "tpu"])
def test_scan_kernel_lowers(platform, monkeypatch):
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu" if platform == "cuda" else "tpu")
    r = jnp.zeros((6, 50))

    def f(r):
        return scan_pallas.gae(r, r, r, gamma=0.9, lam=0.9, interpret=False)

    jax.jit(f).trace(r).lower(lowering_platforms=(platform,))
