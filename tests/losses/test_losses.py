"""Losses: hand-derived values, gradient properties, aggregation scales, errors, jit."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_reason import losses

LN2 = float(np.log(2.0))


# Three tokens with ratios 2, 0.5, 1.1 and advantages +1, -1, +1 (eps 0.2):
#   t0: max(-2, -1.2)  = -1.2 (clipped),  t1: max(0.5, 0.8) = 0.8 (clipped),  t2: -1.1.
# The old log-probs are not zero, so swapping logp and old_logprobs changes every ratio.
OLD = jnp.array([[-1.0, -2.0, -0.5]])
LOGP = OLD + jnp.log(jnp.array([[2.0, 0.5, 1.1]]))
ADV = jnp.array([[1.0, -1.0, 1.0]])
MASK = jnp.ones((1, 3))


class PolicyLossTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_ppo_hand_values(self):
        loss, met = self.variant(losses.policy_loss)(LOGP, OLD, ADV, MASK)
        np.testing.assert_allclose(loss, -1.5 / 3, rtol=1e-6)
        np.testing.assert_allclose(met["pg_clipfrac"], 2 / 3, rtol=1e-6)
        # mean(old - logp) = -(ln 2 + ln .5 + ln 1.1) / 3 = -ln(1.1) / 3
        np.testing.assert_allclose(met["ppo_kl"], -np.log(1.1) / 3, rtol=1e-5)
        np.testing.assert_allclose(met["pg_clipfrac_lower"], 0.0)
        np.testing.assert_allclose(met["ratio_mean"], 3.6 / 3, rtol=1e-6)
        np.testing.assert_allclose(met["ratio_min"], 0.5, rtol=1e-6)
        np.testing.assert_allclose(met["ratio_max"], 2.0, rtol=1e-6)
        assert loss.dtype == jnp.float32

    @chex.variants(with_jit=True, without_jit=True)
    def test_gradient_zero_on_clipped_tokens(self):
        grad = self.variant(jax.grad(lambda lp: losses.policy_loss(lp, OLD, ADV, MASK)[0]))(LOGP)
        # d(-A r)/dlogp = -A r on the unclipped token, over 3 tokens.
        np.testing.assert_allclose(grad, [[0.0, 0.0, -1.1 / 3]], atol=1e-6)
        # A > 0 with a small ratio (and A < 0 with a large one) is NOT clipped: pessimism.
        lp = jnp.log(jnp.array([[0.5, 1.5]]))
        a = jnp.array([[1.0, -1.0]])
        g = jax.grad(lambda x: losses.policy_loss(x, jnp.zeros((1, 2)), a, jnp.ones((1, 2)))[0])(lp)
        np.testing.assert_allclose(g, [[-0.25, 0.75]], rtol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    def test_clip_higher(self):
        lp = jnp.log(jnp.array([[1.25, 0.75]]))
        a = jnp.array([[1.0, -1.0]])
        m = jnp.ones((1, 2))
        sym, met_sym = self.variant(losses.policy_loss)(lp, jnp.zeros((1, 2)), a, m)
        # eps 0.2 both sides: -1.2 and 0.8 (both clipped).
        np.testing.assert_allclose(sym, (-1.2 + 0.8) / 2, rtol=1e-6)
        np.testing.assert_allclose(met_sym["pg_clipfrac"], 1.0)
        asym = functools.partial(losses.policy_loss, clip_low=0.2, clip_high=0.28)
        high, met = self.variant(asym)(lp, jnp.zeros((1, 2)), a, m)
        # 1.25 < 1.28 is now inside the interval: -1.25; the low side is unchanged.
        np.testing.assert_allclose(high, (-1.25 + 0.8) / 2, rtol=1e-6)
        np.testing.assert_allclose(met["pg_clipfrac"], 0.5)

    @chex.variants(with_jit=True, without_jit=True)
    def test_dual_clip_bound(self):
        lp = jnp.log(jnp.array([[4.0, 2.0, 4.0]]))
        a = jnp.array([[-1.0, -1.0, 1.0]])
        m = jnp.ones((1, 3))
        fn = self.variant(functools.partial(losses.policy_loss, dual_clip=3.0))
        loss, met = fn(lp, jnp.zeros((1, 3)), a, m)
        # t0: max(4, 1.2) = 4 bounded to 3; t1: max(2, 1.2) = 2 < 3; t2: max(-4, -1.2) = -1.2.
        np.testing.assert_allclose(loss, (3.0 + 2.0 - 1.2) / 3, rtol=1e-6)
        np.testing.assert_allclose(met["pg_clipfrac_lower"], 1 / 3, rtol=1e-6)
        plain, _ = losses.policy_loss(lp, jnp.zeros((1, 3)), a, m)
        np.testing.assert_allclose(plain, (4.0 + 2.0 - 1.2) / 3, rtol=1e-6)
        grad = jax.grad(lambda x: losses.policy_loss(x, jnp.zeros((1, 3)), a, m, dual_clip=3.0)[0])(
            lp
        )
        np.testing.assert_allclose(grad, [[0.0, 2.0 / 3, 0.0]], rtol=1e-6, atol=1e-7)
        # The bound: on random inputs no negative-advantage token loses more than c |A|,
        # and the tokens with ratio > c sit exactly on it.
        rng = np.random.default_rng(0)
        lp = rng.normal(scale=2.0, size=64).astype(np.float32)
        adv = -np.abs(rng.normal(size=64)).astype(np.float32) - 0.1
        one = jnp.ones((1, 1))
        per_token = jax.vmap(lambda x, y: fn(x[None, None], 0 * one, y[None, None], one)[0])
        got = np.asarray(per_token(lp, adv))
        assert np.all(got <= 3.0 * np.abs(adv) + 1e-5)
        active = np.exp(lp) > 3.0
        assert active.sum() >= 5  # the bound was exercised
        np.testing.assert_allclose(got[active], 3.0 * np.abs(adv[active]), rtol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    def test_gspo_value_and_gradient(self):
        # One sequence, log-ratios (ln 2, 0): s = exp(ln 2 / 2) = sqrt 2.
        lp = jnp.array([[LN2, 0.0]])
        old, m = jnp.zeros((1, 2)), jnp.ones((1, 2))
        gspo = functools.partial(losses.policy_loss, loss_type="gspo")
        loss, met = self.variant(gspo)(lp, old, jnp.full((1, 2), -1.0), m)
        s = np.sqrt(2.0)
        np.testing.assert_allclose(loss, s, rtol=1e-6)  # max(s, 1.2): not clipped
        np.testing.assert_allclose(met["ratio_mean"], s, rtol=1e-6)
        np.testing.assert_allclose(met["pg_clipfrac"], 0.0)
        # The stop-gradient form has the gradient of GSPO's true sequence objective.
        grad = jax.grad(lambda x: gspo(x, old, jnp.full((1, 2), -1.0), m)[0])(lp)
        true = jax.grad(lambda x: jnp.exp(jnp.mean(x - old)))(lp)
        np.testing.assert_allclose(grad, true, rtol=1e-6)
        np.testing.assert_allclose(grad, [[s / 2, s / 2]], rtol=1e-6)
        # With A = +1 the sequence is clipped at 1.2 and gets no gradient.
        loss_pos, met_pos = gspo(lp, old, jnp.ones((1, 2)), m)
        np.testing.assert_allclose(loss_pos, -1.2, rtol=1e-6)
        np.testing.assert_allclose(met_pos["pg_clipfrac"], 1.0)
        g_pos = jax.grad(lambda x: gspo(x, old, jnp.ones((1, 2)), m)[0])(lp)
        np.testing.assert_array_equal(g_pos, 0.0)

    @chex.variants(with_jit=True, without_jit=True)
    def test_gspo_ragged_uses_seq_mean_token_mean(self):
        lp = jnp.array([[LN2, 0.0, 5.0], [0.0, 0.0, 0.0]])
        m = jnp.array([[1, 1, 0], [1, 0, 0]])
        a = jnp.array([[-1.0, -1.0, 0.0], [2.0, 0.0, 0.0]])
        loss, _ = self.variant(functools.partial(losses.policy_loss, loss_type="gspo"))(
            lp, jnp.zeros((2, 3)), a, m
        )
        # Row 0: sqrt 2 (per-token mean of a constant); row 1: ratio 1 -> -2. Mean of rows.
        np.testing.assert_allclose(loss, (np.sqrt(2.0) - 2.0) / 2, rtol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    def test_empty_mask_and_padding_garbage(self):
        fn = self.variant(losses.policy_loss)
        loss, met = fn(LOGP, OLD, ADV, jnp.zeros((1, 3)))
        assert float(loss) == 0.0 and all(float(v) == 0.0 for v in met.values())
        # inf / nan in masked-out positions never reach the result.
        lp = jnp.array([[0.0, jnp.inf]])
        adv = jnp.array([[1.0, jnp.nan]])
        loss, met = fn(lp, jnp.zeros((1, 2)), adv, jnp.array([[1, 0]]))
        np.testing.assert_allclose(loss, -1.0)
        assert all(np.isfinite(v) for v in met.values())

    def test_errors(self):
        with pytest.raises(ValueError, match="valid types: ppo, gspo"):
            losses.policy_loss(LOGP, OLD, ADV, MASK, loss_type="grpo")
        with pytest.raises(ValueError, match="valid modes"):
            losses.policy_loss(LOGP, OLD, ADV, MASK, agg_mode="mean")
        with pytest.raises(ValueError, match="dual_clip must be > 1"):
            losses.policy_loss(LOGP, OLD, ADV, MASK, dual_clip=0.5)
        with pytest.raises(ValueError, match="gspo"):
            losses.policy_loss(LOGP, OLD, ADV, MASK, dual_clip=3.0, loss_type="gspo")
        with pytest.raises(ValueError, match="clip_low"):
            losses.policy_loss(LOGP, OLD, ADV, MASK, clip_low=-0.1)
        with pytest.raises(ValueError, match="advantages has shape"):
            losses.policy_loss(LOGP, OLD, jnp.ones((1, 4)), MASK)


# Ragged batch: row 0 has one token, row 1 three, row 2 none (T = 4).
LOSS_MAT = jnp.array([[1.0, 2, 3, 4], [5, 6, 7, 8], [9, 9, 9, 9]])
RAGGED = jnp.array([[1, 0, 0, 0], [1, 1, 1, 0], [0, 0, 0, 0]])


class AggregateTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_hand_values_on_ragged_mask(self):
        want = {
            "token-mean": 19 / 4,  # (1 + 5 + 6 + 7) / 4 tokens
            "seq-mean-token-sum": (1 + 18) / 2,  # the empty row does not count
            "seq-mean-token-mean": (1 + 6) / 2,
            "seq-mean-token-sum-norm": 19 / 4,  # / T, not / rows
        }
        for mode, value in want.items():
            got = self.variant(losses.aggregate, static_argnums=2)(LOSS_MAT, RAGGED, mode)
            np.testing.assert_allclose(got, value, rtol=1e-6, err_msg=mode)
        norm = self.variant(
            functools.partial(
                losses.aggregate, mode="seq-mean-token-sum-norm", loss_scale_factor=10.0
            )
        )
        np.testing.assert_allclose(norm(LOSS_MAT, RAGGED), 1.9, rtol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    def test_scale_of_each_token(self):
        """d loss / d loss_mat: the weight every token gets in the gradient."""
        want = {
            "token-mean": [[1 / 4, 0, 0, 0], [1 / 4, 1 / 4, 1 / 4, 0]],
            "seq-mean-token-sum": [[1 / 2, 0, 0, 0], [1 / 2, 1 / 2, 1 / 2, 0]],
            "seq-mean-token-mean": [[1 / 2, 0, 0, 0], [1 / 6, 1 / 6, 1 / 6, 0]],
            "seq-mean-token-sum-norm": [[1 / 4, 0, 0, 0], [1 / 4, 1 / 4, 1 / 4, 0]],
        }
        for mode, w in want.items():
            grad = self.variant(jax.grad(lambda x, mode=mode: losses.aggregate(x, RAGGED, mode)))(
                LOSS_MAT
            )
            np.testing.assert_allclose(grad, w + [[0, 0, 0, 0]], rtol=1e-6, err_msg=mode)

    @chex.variants(with_jit=True, without_jit=True)
    def test_empty_mask_is_zero(self):
        for mode in losses.AGG_MODES:
            got = self.variant(losses.aggregate, static_argnums=2)(
                LOSS_MAT, jnp.zeros((3, 4)), mode
            )
            assert float(got) == 0.0, mode

    def test_micro_batches_sum_to_full_batch_with_global_counts(self):
        full_tok = losses.aggregate(LOSS_MAT, RAGGED, "token-mean")
        full_seq = losses.aggregate(LOSS_MAT, RAGGED, "seq-mean-token-mean")
        parts_tok = sum(
            losses.aggregate(LOSS_MAT[s], RAGGED[s], "token-mean", num_tokens=4.0)
            for s in (slice(0, 1), slice(1, 3))
        )
        parts_seq = sum(
            losses.aggregate(LOSS_MAT[s], RAGGED[s], "seq-mean-token-mean", num_seqs=2.0)
            for s in (slice(0, 1), slice(1, 3))
        )
        np.testing.assert_allclose(parts_tok, full_tok, rtol=1e-6)
        np.testing.assert_allclose(parts_seq, full_seq, rtol=1e-6)

    def test_errors(self):
        with pytest.raises(ValueError, match="valid modes: token-mean, seq-mean-token-sum"):
            losses.aggregate(LOSS_MAT, RAGGED, "sum")
        with pytest.raises(ValueError, match="mask has shape"):
            losses.aggregate(LOSS_MAT, RAGGED[:, :3], "token-mean")


class KlTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_hand_values(self):
        lp = jnp.array([LN2, -LN2, 0.0, -30.0])
        ref = jnp.zeros(4)
        want = {
            "k1": [LN2, -LN2, 0, -30],
            "abs": [LN2, LN2, 0, 30],
            "k2": [LN2**2 / 2, LN2**2 / 2, 0, 450],
            # exp(-d) - 1 + d: 0.5 - 1 + ln 2; 2 - 1 - ln 2; 0; clamped to 10.
            "k3": [LN2 - 0.5, 1 - LN2, 0, 10],
        }
        aliases = {"k1": "kl", "k2": "mse", "k3": "low_var_kl"}
        for kind, w in want.items():
            fn = self.variant(losses.kl, static_argnums=2)
            np.testing.assert_allclose(fn(lp, ref, kind), w, rtol=1e-6, atol=1e-7, err_msg=kind)
            if kind in aliases:
                np.testing.assert_array_equal(fn(lp, ref, aliases[kind]), fn(lp, ref, kind))

    @chex.variants(with_jit=True, without_jit=True)
    def test_straight_through_has_k2_gradient(self):
        lp = jnp.array([0.3, -1.2, 2.0])
        ref = jnp.array([0.0, 0.5, 1.0])
        fn = self.variant(losses.kl, static_argnums=2)
        np.testing.assert_allclose(fn(lp, ref, "k3+"), fn(lp, ref, "k3"), rtol=1e-6)
        g = jax.grad(lambda x: jnp.sum(losses.kl(x, ref, "k3+")))(lp)
        np.testing.assert_allclose(g, lp - ref, rtol=1e-6)  # grad of 0.5 d^2
        g3 = jax.grad(lambda x: jnp.sum(losses.kl(x, ref, "k3")))(lp)
        np.testing.assert_allclose(g3, 1 - np.exp(-(lp - ref)), rtol=1e-5)

    def test_errors(self):
        with pytest.raises(ValueError, match="valid kinds: k1, kl, abs, k2, mse, k3, low_var_kl"):
            losses.kl(LOGP, OLD, "k4")
        with pytest.raises(ValueError, match="valid kinds"):
            losses.kl(LOGP, OLD, "k2+")
        with pytest.raises(ValueError, match="ref_logprobs has shape"):
            losses.kl(LOGP, jnp.zeros((1, 2)), "k1")


class EntropyAndValueTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_entropy(self):
        logits = jnp.array([[[0.0, 0.0, 0.0, 0.0], [0.0, -jnp.inf, -jnp.inf, -jnp.inf]]])
        ent = self.variant(losses.entropy_from_logits)(logits)
        np.testing.assert_allclose(ent, [[np.log(4.0), 0.0]], atol=1e-6)
        ent = jnp.array([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]])
        m = jnp.array([[1, 1, 1], [1, 0, 0]])
        fn = self.variant(losses.entropy_loss, static_argnums=2)
        np.testing.assert_allclose(fn(ent, m, "token-mean"), 10 / 4, rtol=1e-6)
        np.testing.assert_allclose(fn(ent, m, "seq-mean-token-mean"), (2 + 4) / 2, rtol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    def test_value_loss_hand_values(self):
        vpred = jnp.array([[2.0, 2.0, 7.0]])
        ret = jnp.array([[0.0, 3.0, 0.0]])
        old = jnp.array([[1.0, 1.0, 0.0]])
        m = jnp.array([[1, 1, 0]])
        # t0: clip(2) = 1.5, max(4, 2.25) = 4 (unclipped); t1: max(1, 2.25) = 2.25 (clipped).
        fn = self.variant(losses.value_loss)
        loss, met = fn(vpred, ret, old, m)
        np.testing.assert_allclose(loss, 0.5 * (4 + 2.25) / 2, rtol=1e-6)
        np.testing.assert_allclose(met["vf_clipfrac"], 0.5)
        np.testing.assert_allclose(met["vpred_mean"], 2.0)
        grad = jax.grad(lambda v: losses.value_loss(v, ret, old, m)[0])(vpred)
        # 0.5 * 2 (vpred - R) / 2 tokens on t0; zero on the clipped and masked tokens.
        np.testing.assert_allclose(grad, [[1.0, 0.0, 0.0]], atol=1e-7)
        wide = functools.partial(losses.value_loss, cliprange_value=10.0)
        loss, met = self.variant(wide)(vpred, ret, old, m)
        np.testing.assert_allclose(loss, 0.5 * (4 + 1) / 2, rtol=1e-6)
        np.testing.assert_allclose(met["vf_clipfrac"], 0.0)

    def test_value_loss_empty_mask(self):
        loss, met = losses.value_loss(
            jnp.ones((2, 2)), jnp.ones((2, 2)), jnp.ones((2, 2)), jnp.zeros((2, 2))
        )
        assert float(loss) == 0.0 and float(met["vf_clipfrac"]) == 0.0


def test_prm_bce_loss_math_shepherd_example():
    import jax.numpy as jnp

    from jaxrl_reason.losses.prm import prm_bce_loss

    p = jnp.asarray([[0.9, 0.6, 0.2, 0.5]])
    z = jnp.log(p / (1 - p))
    mask = jnp.asarray([[1, 1, 1, 0]], bool)  # the 4th step is padding: it must not count
    hard = prm_bce_loss(z, jnp.asarray([[1.0, 1.0, 0.0, 1.0]]), mask)
    soft = prm_bce_loss(z, jnp.asarray([[0.75, 0.25, 0.0, 1.0]]), mask)
    np.testing.assert_allclose(float(hard), 0.279777, atol=1e-5)
    np.testing.assert_allclose(float(soft), 0.564245, atol=1e-5)
    assert float(prm_bce_loss(z, z * 0, mask * False)) == 0.0


def test_prm_bce_loss_class_weights_by_hand():
    import math

    import jax.numpy as jnp

    from jaxrl_reason.losses.prm import balanced_weights, prm_bce_loss

    assert balanced_weights(0.1) == pytest.approx((5.0, 0.5 / 0.9))
    assert balanced_weights(0.0) == pytest.approx((500.0, 0.5 / 0.999))
    p = [0.9, 0.6, 0.2]
    z = jnp.log(jnp.asarray([p]) / (1 - jnp.asarray([p])))
    y = jnp.asarray([[1.0, 0.0, 0.0]])
    mask = jnp.ones((1, 3), bool)
    # (5 * -log 0.9 + 0.5 * (-log 0.4) + 0.5 * (-log 0.8)) / 3
    want = (5 * -math.log(0.9) + 0.5 * -math.log(0.4) + 0.5 * -math.log(0.8)) / 3
    got = prm_bce_loss(z, y, mask, pos_weight=5.0, neg_weight=0.5)
    assert float(got) == pytest.approx(want, rel=1e-5)
    # Soft label 0.25 splits its weight: 0.25 * 5 * -log p + 0.75 * 0.5 * -log(1 - p).
    ys = jnp.asarray([[0.25, 0.0, 0.0]])
    want_s = (
        1.25 * -math.log(0.9) + 0.375 * -math.log(0.1) + 0.5 * -math.log(0.4) + 0.5 * -math.log(0.8)
    ) / 3
    got_s = prm_bce_loss(z, ys, mask, pos_weight=5.0, neg_weight=0.5)
    assert float(got_s) == pytest.approx(want_s, rel=1e-5)
