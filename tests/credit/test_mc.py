"""VinePPO and SPO-chain against research/process_credit.md sections 3 and 4a."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_reason import credit
from jaxrl_reason.credit import mc
from jaxrl_reason.credit.segments import masked_whiten
from jaxrl_reason.rollout import steps


class MCStepAdvantagesTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_vineppo_worked_example(self):
        # S=3 valid steps (+1 padded with garbage), V = [4/9, 6/9, 3/9], V(s_3) = 0.
        v = np.array([[4 / 9, 6 / 9, 3 / 9, 77.0]] * 2, np.float32)
        sm = np.array([[1, 1, 1, 0]] * 2, bool)
        a = self.variant(mc.mc_step_advantages)(v, sm, np.array([0.0, 1.0], np.float32))
        np.testing.assert_allclose(
            a, [[0.222222, -0.333333, -0.333333, 0], [0.222222, -0.333333, 0.666667, 0]], atol=1e-5
        )

    def test_telescopes_to_return_minus_v0(self):
        rng = np.random.default_rng(0)
        v = rng.uniform(size=(5, 6)).astype(np.float32)
        n = np.array([1, 2, 3, 6, 4])
        sm = np.arange(6)[None, :] < n[:, None]
        r = rng.integers(0, 2, size=5).astype(np.float32)
        a = np.asarray(jax.jit(mc.mc_step_advantages)(v, sm, r))
        np.testing.assert_allclose(a.sum(-1), r - v[:, 0], atol=1e-6)
        np.testing.assert_array_equal(a[~sm], 0.0)

    def test_vineppo_tokens_and_whitening(self):
        seg = np.array([[0, 0, 1, 1, 1, 2, 2], [0, 1, 1, -1, -1, -1, -1]])
        mask = seg >= 0
        v = np.array([[0.5, 0.25, 1.0], [0.5, 0.0, 9.0]], np.float32)
        o = np.array([1.0, 0.0], np.float32)
        fn = jax.jit(mc.vineppo, static_argnames="whiten")
        adv, ret = fn(
            np.zeros((2, 7)),
            mask,
            np.zeros(2, np.int32),
            segment_id=seg,
            step_values=v,
            outcome=o,
            whiten=False,
        )
        # row 0: A = [0.25-0.5, 1-0.25, 1+0-1] ; row 1 (2 steps): [0-0.5, 0+0-0]
        want = np.array([[-0.25, -0.25, 0.75, 0.75, 0.75, 0, 0], [-0.5, 0, 0, 0, 0, 0, 0]])
        np.testing.assert_allclose(adv, want, atol=1e-6)
        np.testing.assert_allclose(
            ret, [[0.25, 0.25, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0, 0]], atol=1e-6
        )
        adv_w, _ = fn(
            np.zeros((2, 7)), mask, np.zeros(2, np.int32), segment_id=seg, step_values=v, outcome=o
        )
        np.testing.assert_allclose(adv_w, masked_whiten(want, mask), atol=1e-5)
        # outcome from token rewards; empty mask gives zeros
        tr = np.zeros((2, 7), np.float32)
        tr[0, 6] = 1.0
        adv2, _ = fn(tr, mask, np.zeros(2, np.int32), segment_id=seg, step_values=v, whiten=False)
        np.testing.assert_allclose(adv2, want, atol=1e-6)
        adv0, ret0 = fn(
            tr, np.zeros_like(mask), np.zeros(2, np.int32), segment_id=seg, step_values=v
        )
        np.testing.assert_array_equal(adv0, 0.0)
        np.testing.assert_array_equal(ret0, 0.0)


class SPOChainTest(chex.TestCase):
    P = np.array([0.95, 0.5, 0.99, 0.8, 0.97, 0.6, 0.3, 0.99, 0.7, 0.98])

    def test_cut_points_worked_example(self):
        cuts = steps.spo_chain_cut_points(self.P, rho=0.9, interval=2)
        np.testing.assert_array_equal(cuts, [0, 4, 7])
        seg, cuts2, known = steps.spo_chain_segment_ids(self.P, rho=0.9, interval=2)
        np.testing.assert_array_equal(seg, [0, 1, 1, 1, 1, 2, 2, 2, 3, 3])
        assert not known
        # first token a candidate -> the prompt (-1) is a cut and segment 0 has a value
        seg, cuts, known = steps.spo_chain_segment_ids([0.5, 0.95, 0.5, 0.5], interval=2)
        np.testing.assert_array_equal(cuts, [-1, 2])  # candidates 0, 2, 3
        np.testing.assert_array_equal(seg, [0, 0, 0, 1])
        assert known

    def test_worked_example(self):
        seg, _, known = steps.spo_chain_segment_ids(self.P, rho=0.9, interval=2)
        seg = np.concatenate([seg, [-1, -1]])[None]
        mask = seg >= 0
        logp = np.log(np.concatenate([self.P, [0.1, 0.1]]))[None].astype(np.float32)
        v = np.array([[123.0, 3 / 9, 5 / 9, 8 / 9]], np.float32)  # V(prompt) unknown: garbage
        vm = np.array([[known, True, True, True]])

        def run(logp, seg, mask, v, vm):
            return mc.spo_chain(
                jnp.zeros((1, 12)),
                mask,
                jnp.zeros(1, jnp.int32),
                segment_id=seg,
                step_values=v,
                step_value_mask=vm,
                logp=logp,
                outcome=jnp.ones(1),
                whiten=False,
            )

        adv, _ = jax.jit(run)(logp, seg, mask, v, vm)
        want = [0, 0.222222, 0, 0.222222, 0, 0.333333, 0.333333, 0, 0.111111, 0, 0, 0]
        np.testing.assert_allclose(adv[0], want, atol=1e-5)
        lm = mc.spo_prob_mask(logp, mask)
        np.testing.assert_array_equal(lm[0], [0, 1, 0, 1, 0, 1, 1, 0, 1, 0, 0, 0])
        adv_w, _ = jax.jit(mc.spo_chain)(
            jnp.zeros((1, 12)),
            mask,
            jnp.zeros(1, jnp.int32),
            segment_id=seg,
            step_values=v,
            step_value_mask=vm,
            logp=logp,
            outcome=jnp.ones(1),
        )
        np.testing.assert_allclose(adv_w, masked_whiten(np.array([want]), lm), atol=1e-5)

    def test_registered(self):
        assert credit.get("vineppo") is mc.vineppo
        assert credit.get("spo_chain") is mc.spo_chain


@pytest.mark.slow
def test_estimators_jit_equals_plain():
    seg = np.array([[0, 0, 1, 1, 1, 2, 2], [0, 1, 1, -1, -1, -1, -1]])
    mask = seg >= 0
    v = np.array([[0.5, 0.25, 1.0], [0.5, 0.0, 9.0]], np.float32)
    logp = np.log(np.linspace(0.3, 0.99, 14)).reshape(2, 7).astype(np.float32)
    kw = dict(segment_id=seg, step_values=v, outcome=np.array([1.0, 0.0], np.float32))
    args = (np.zeros((2, 7)), mask, np.zeros(2, np.int32))
    for fn, extra in ((mc.vineppo, {}), (mc.spo_chain, dict(logp=logp))):
        chex.assert_trees_all_close(
            fn(*args, **kw, **extra), jax.jit(fn)(*args, **kw, **extra), atol=1e-6
        )


def test_spo_chain_empty_mask_gives_zeros():
    seg = np.zeros((2, 5), np.int32)
    adv, ret = jax.jit(mc.spo_chain)(
        np.ones((2, 5)),
        np.zeros((2, 5), bool),
        np.zeros(2, np.int32),
        segment_id=seg,
        step_values=np.ones((2, 2)),
        logp=np.full((2, 5), -3.0),
    )
    assert np.isfinite(adv).all()
    np.testing.assert_array_equal(adv, 0.0)
    np.testing.assert_array_equal(ret, 0.0)


def test_fill_unestimated_values_is_vineppos_own_return_rule():
    # S_b = 4, estimated [T, T, F, F], R = 1: V = [0.5, 0.25, 1, 1]; the capped steps get
    # advantage 0 and the last estimated one carries the rest: [-0.25, 0.75, 0, 0].
    v = np.array([[0.5, 0.25, 9.0, 9.0, 7.0], [0.5, 9.0, 0.75, 9.0, 7.0]], np.float32)
    known = np.array([[1, 1, 0, 0, 0], [1, 0, 1, 0, 0]], bool)
    sm = np.array([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0]], bool)
    o = np.array([1.0, 0.0], np.float32)
    filled = np.asarray(jax.jit(mc.fill_unestimated_values)(v, known, sm, o))
    # row 1 (every-other step, R = 0, 3 steps): V(s_1) = r_1 + V(s_2) = 0.75 (carried back)
    np.testing.assert_allclose(filled, [[0.5, 0.25, 1, 1, 0], [0.5, 0.75, 0.75, 0, 0]])
    adv = np.asarray(mc.mc_step_advantages(filled, sm, o))
    np.testing.assert_allclose(adv, [[-0.25, 0.75, 0, 0, 0], [0.25, 0, -0.75, 0, 0]], atol=1e-6)
    # vineppo reads the mask: the same advantages per token, and all-known leaves v untouched
    seg = np.array([[0, 1, 2, 3, -1], [0, 1, 2, -1, -1]])
    a, _ = jax.jit(mc.vineppo, static_argnames="whiten")(
        np.zeros((2, 5)),
        seg >= 0,
        np.zeros(2, np.int32),
        segment_id=seg,
        step_values=v,
        step_value_mask=known,
        outcome=o,
        whiten=False,
    )
    np.testing.assert_allclose(a, [[-0.25, 0.75, 0, 0, 0], [0.25, 0, -0.75, 0, 0]], atol=1e-6)
    np.testing.assert_array_equal(mc.fill_unestimated_values(v, None, sm, o), np.where(sm, v, 0))


def test_spo_chain_loss_mask_is_registered():
    logp = np.log(np.array([[0.5, 0.95, 0.3, 0.99]], np.float32))
    m = np.array([[1, 1, 1, 0]], bool)
    fn = credit.loss_mask_fn("spo_chain")
    np.testing.assert_array_equal(fn(m, logp=logp, rho=0.9), [[1, 0, 1, 0]])
    np.testing.assert_array_equal(fn(m, logp=logp, prob_mask=False), m)
    assert credit.loss_mask_fn("vineppo") is None and credit.loss_mask_fn("grpo") is None
