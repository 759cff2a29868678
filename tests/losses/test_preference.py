"""DPO and SFT losses against hand-computed values (prm_search_selftraining.md §7)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_reason.losses import dpo_loss, sequence_logprob, sft_loss

POL_W = jnp.array([-12.0, -30.0])
POL_L = jnp.array([-15.0, -28.0])
REF_W = jnp.array([-13.0, -29.0])
REF_L = jnp.array([-14.0, -29.5])


def test_dpo_worked_example():
    loss, m = dpo_loss(POL_W, POL_L, REF_W, REF_L, beta=0.1)
    # h = [(-12+13) - (-15+14), (-30+29) - (-28+29.5)] = [2.0, -2.5]
    per = [-math.log(1 / (1 + math.exp(-0.1 * h))) for h in (2.0, -2.5)]
    np.testing.assert_allclose(per, [0.598139, 0.825939], atol=1e-6)
    assert float(loss) == pytest.approx(0.712039, abs=1e-6)
    assert float(m["dpo/reward_chosen"]) == pytest.approx(0.0, abs=1e-6)  # mean(.1, -.1)
    assert float(m["dpo/reward_rejected"]) == pytest.approx(0.025, abs=1e-6)  # mean(-.1, .15)
    assert float(m["dpo/accuracy"]) == 0.5


def test_dpo_gradient_matches_the_closed_form():
    """dL/dlogp_pol[w] = -beta sigmoid(-beta h) / B, and + for the rejected."""
    g = jax.grad(lambda w, rej: dpo_loss(w, rej, REF_W, REF_L, beta=0.1)[0], argnums=(0, 1))
    gw, gl = g(POL_W, POL_L)
    h = np.array([2.0, -2.5])
    expect = -0.1 / (1 + np.exp(0.1 * h)) / 2
    np.testing.assert_allclose(gw, expect, rtol=1e-5)
    np.testing.assert_allclose(expect * 2, [-0.045017, -0.056218], atol=1e-6)
    np.testing.assert_allclose(gl, -expect, rtol=1e-5)
    # the reference gets no gradient
    gr = jax.grad(lambda r: dpo_loss(POL_W, POL_L, r, REF_L)[0])(REF_W)
    np.testing.assert_array_equal(gr, 0.0)


def test_dpo_label_smoothing_mixes_both_directions():
    eps = 0.2
    loss, _ = dpo_loss(POL_W[:1], POL_L[:1], REF_W[:1], REF_L[:1], beta=0.1, label_smoothing=eps)
    sp = lambda x: math.log1p(math.exp(x))  # -log sigmoid(-x)
    assert float(loss) == pytest.approx((1 - eps) * sp(-0.2) + eps * sp(0.2), abs=1e-6)


def test_sequence_logprob_sums_over_the_mask():
    lp = jnp.array([[-1.5, -0.5, -2.0, -9.0]])
    assert float(sequence_logprob(lp, jnp.array([[1, 1, 1, 0]]))[0]) == -4.0


def test_sft_loss_is_the_masked_nll():
    lp = jnp.array([[-1.0, -3.0, -7.0], [-2.0, -5.0, -5.0]])
    mask = jnp.array([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    # token-mean: (1 + 3 + 2) / 3 tokens
    assert float(sft_loss(lp, mask)) == pytest.approx(2.0)
    # seq-mean-token-mean: mean of per-row means (2, 2)
    assert float(sft_loss(lp, mask, "seq-mean-token-mean")) == pytest.approx(2.0)
    mask2 = jnp.array([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    assert float(sft_loss(lp, mask2)) == pytest.approx(11.0 / 3)
