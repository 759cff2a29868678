"""Implicit PRM, PRIME, PURE and CAPO against the worked examples of
research/process_credit.md (sections 1, 2, 5) and hand-derived cases."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_reason import credit
from jaxrl_reason.credit import process as P

ATOL = 1e-5

# research/process_credit.md 1b: one prompt, K=3, T=3.
Q = np.array([[0.2, -0.1, 0.3], [0.4, 0.0, 0.0], [-0.2, -0.3, 0.1]], np.float32)
QMASK = np.array([[1, 1, 1], [1, 1, 0], [1, 1, 1]], bool)
QO = np.array([1.0, 0.0, 1.0], np.float32)
G3 = np.zeros(3, np.int32)


def _garbage(x, mask, value=1e4):
    return np.where(mask, x, value).astype(np.float32)


class ImplicitPRMTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_worked_example(self):
        logp = np.array([[-1.0, -0.5, -2.0, -0.1]], np.float32)
        ref = np.array([[-1.2, -0.5, -1.5, -0.3]], np.float32)
        mask = np.ones((1, 4), bool)
        seg = np.array([[0, 0, 1, 1]])
        r = self.variant(P.implicit_process_rewards)(logp, ref, mask)
        np.testing.assert_allclose(r, [[0.01, 0.0, -0.025, 0.01]], atol=ATOL)
        r_step, q_end, sm = self.variant(P.implicit_step_rewards, static_argnums=3)(r, seg, mask, 2)
        np.testing.assert_allclose(r_step, [[0.01, -0.015]], atol=ATOL)
        np.testing.assert_allclose(q_end, [[0.01, -0.005]], atol=ATOL)
        np.testing.assert_array_equal(sm, [[True, True]])
        loss = self.variant(P.implicit_prm_loss)
        np.testing.assert_allclose(loss(logp, ref, mask, np.array([1.0])), 0.6956503, atol=ATOL)
        np.testing.assert_allclose(loss(logp, ref, mask, np.array([0.0])), 0.6906503, atol=ATOL)

    def test_loss_ignores_padding_and_empty_rows(self):
        logp = np.array([[-1.0, -0.5, 7.0], [3.0, 3.0, 3.0]], np.float32)
        ref = np.array([[-1.2, -0.5, -9.0], [1.0, 1.0, 1.0]], np.float32)
        mask = np.array([[1, 1, 0], [0, 0, 0]], bool)
        # z = 0.05 * 0.2 = 0.01; o = 1 -> softplus(-0.01); the empty row is excluded.
        want = np.log1p(np.exp(-0.01))
        np.testing.assert_allclose(
            P.implicit_prm_loss(logp, ref, mask, np.array([1.0, 0.0])), want, atol=1e-6
        )


class PrimeTest(chex.TestCase):
    def test_code_variant_worked_example(self):
        fn = jax.jit(
            lambda lp, m, o: P.prime(
                jnp.zeros((3, 3)),
                m,
                G3,
                logp=lp,
                ref_logp=jnp.zeros((3, 3)),
                outcome=o,
                variant="code",
            )
        )
        adv, ret = fn(_garbage(Q, QMASK), QMASK, QO)
        np.testing.assert_allclose(
            ret, [[1.25, 0.75, 1.375], [0.0, -1.25, 0], [-1.75, -0.75, 0.625]], atol=1e-5
        )
        np.testing.assert_allclose(
            adv,
            [
                [1.041469, 0.614200, 1.148287],
                [-0.026707, -1.094880, 0.0],
                [-1.522145, -0.667607, 0.507383],
            ],
            atol=1e-5,
        )

    def test_paper_variant_worked_example(self):
        # The notes' paper-form returns use the batch-normalised process rewards, beta = 1.
        fn = jax.jit(
            lambda lp, m, o: P.prime(
                jnp.zeros((3, 3)),
                m,
                G3,
                logp=lp,
                ref_logp=jnp.zeros((3, 3)),
                outcome=o,
                beta=1.0,
                process_norm="batch_norm",
            )
        )
        adv, ret = fn(_garbage(Q, QMASK), QMASK, QO)
        want = [[1.25, 0.833333, 1.166665], [0.0, -1.0, 0], [-1.75, -0.83333, 0.333334]]
        np.testing.assert_allclose(ret, want, atol=1e-5)
        np.testing.assert_allclose(adv, ret)  # the paper uses the return as the advantage

    def test_verl_variant_worked_example(self):
        fn = jax.jit(
            lambda lp, m, o: P.prime(
                jnp.zeros((3, 3)),
                m,
                G3,
                logp=lp,
                ref_logp=jnp.zeros((3, 3)),
                outcome=o,
                variant="verl",
            )
        )
        adv, ret = fn(_garbage(Q, QMASK), QMASK, QO)
        np.testing.assert_allclose(
            ret,
            [[3.0, 0.33342, 2.16668], [0.33312, -5.33332, 0], [-5.99966, -2.66646, 2.16668]],
            rtol=1e-5,
            atol=1e-5,
        )  # the notes round 2.99998 to 3.0
        np.testing.assert_allclose(
            adv,
            [
                [1.071958, 0.309692, 0.833750],
                [0.309606, -1.310209, 0],
                [-1.500690, -0.547857, 0.833750],
            ],
            atol=1e-5,
        )

    def test_paper_hand_values_with_discount(self):
        # rbar = [1.5, 1.5]; each row's process baseline is the other's rbar = 1.5.
        # row 0: r - b = [-0.5, 0.5]; outcome RLOO 1 - 0 = 1.   row 1: [1.5, -1.5]; 0 - 1 = -1.
        prime = jax.jit(P.prime)
        pr = np.array([[1.0, 2.0], [3.0, 0.0]], np.float32)
        mask = np.ones((2, 2), bool)
        g = np.array([7, 7], np.int32)
        o = np.array([1.0, 0.0], np.float32)
        _, ret = prime(jnp.zeros((2, 2)), mask, g, process_rewards=pr, outcome=o)
        np.testing.assert_allclose(ret, [[1.0, 1.5], [-1.0, -2.5]], atol=1e-6)
        _, ret = prime(jnp.zeros((2, 2)), mask, g, process_rewards=pr, outcome=o, gamma=0.5)
        np.testing.assert_allclose(ret, [[0.75, 1.5], [-0.25, -2.5]], atol=1e-6)
        # outcome taken from token rewards (verifier reward on the last token)
        tr = np.array([[0.0, 1.0], [0.0, 0.0]], np.float32)
        _, ret2 = prime(tr, mask, g, process_rewards=pr)
        np.testing.assert_allclose(ret2, [[1.0, 1.5], [-1.0, -2.5]], atol=1e-6)

    def test_paper_and_code_returns_agree_at_t0(self):
        rng = np.random.default_rng(0)
        lp = rng.normal(size=(6, 5)).astype(np.float32)
        mask = np.arange(5)[None, :] < rng.integers(1, 6, size=(6,))[:, None]
        g = np.array([0, 0, 0, 1, 1, 1], np.int32)
        o = rng.integers(0, 2, size=6).astype(np.float32)
        kw = dict(
            logp=lp,
            ref_logp=np.zeros_like(lp),
            outcome=o,
            beta=1.0,
            process_norm="batch_norm",
            whiten=False,
        )
        fn = jax.jit(P.prime, static_argnames=("variant", "process_norm", "whiten"))
        _, paper = fn(np.zeros((6, 5)), mask, g, **kw)
        _, code = fn(np.zeros((6, 5)), mask, g, variant="code", **kw)
        np.testing.assert_allclose(paper[:, 0], code[:, 0], atol=1e-5)
        assert np.abs(np.asarray(paper) - np.asarray(code)).max() > 1e-3  # they differ later

    def test_empty_mask_and_registry(self):
        assert credit.get("prime") is P.prime
        z = np.zeros((2, 3), bool)
        for variant in ("paper", "code", "verl"):
            fn = jax.jit(functools.partial(P.prime, variant=variant))
            adv, ret = fn(
                np.ones((2, 3)),
                z,
                np.zeros(2, np.int32),
                logp=np.ones((2, 3)),
                ref_logp=np.zeros((2, 3)),
            )
            np.testing.assert_array_equal(adv, 0.0)
            np.testing.assert_array_equal(ret, 0.0)


# research/process_credit.md 2b/2c: K=2, T=8.
PURE_SEG = np.array([[0, 0, 0, 1, 1, 1, 2, 2], [0, 0, 1, 1, 1, -1, -1, -1]])
PURE_MASK = PURE_SEG >= 0
PURE_SR = np.array([[0.8, -0.6, 0.4], [0.9, 0.7, 55.0]], np.float32)  # 55: padding garbage
PURE_O = np.array([0.0, 1.0], np.float32)


class PureTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_transform_worked_example(self):
        sm = np.array([[1, 1, 1], [1, 1, 0]], bool)
        rs = self.variant(P.pure_transform)(PURE_SR, sm)
        np.testing.assert_allclose(rs[0], [6.6e-7, -0.599972, 1.82e-5], atol=1e-6)
        np.testing.assert_allclose(rs[1], [0.107283, 0.616558, 0.0], atol=1e-6)
        np.testing.assert_allclose(np.sum(rs, -1), [-0.599953, 0.723841], atol=1e-6)

    def test_transform_tends_to_exact_min(self):
        rng = np.random.default_rng(1)
        r = rng.uniform(-1, 1, size=(4, 6)).astype(np.float32)
        sm = np.arange(6)[None, :] < np.array([[6], [3], [1], [4]])
        exact = np.where(sm, r, np.inf).min(-1)
        errs = [
            np.abs(np.sum(P.pure_transform(r, sm, temperature=t), -1) - exact).max()
            for t in (0.3, 0.1, 0.03, 0.003, 0.0003)
        ]
        assert all(a >= b for a, b in zip(errs, errs[1:], strict=False)), errs
        assert errs[-1] < 1e-5, errs
        # exact min-form values: min over the future steps
        mf = P.min_form_returns(np.array([[0.5, -0.2, 0.3, 0.1]]), np.ones((1, 4), bool))
        np.testing.assert_allclose(mf, [[-0.2, -0.2, 0.1, 0.1]])

    def test_main_branch_worked_example(self):
        fn = jax.jit(
            lambda sr, seg, m: P.pure(
                jnp.zeros((2, 8)),
                m,
                jnp.zeros(2, jnp.int32),
                step_rewards=sr,
                segment_id=seg,
                outcome=PURE_O,
                normalize=False,
            )
        )
        adv, g = fn(PURE_SR, PURE_SEG, PURE_MASK)
        np.testing.assert_allclose(
            adv,
            [
                [-2.323794, -2.323794, 0, -2.034258, -2.034258, 0, -1.144750, 0],
                [1.948823, 0, 1.766546, 1.766546, 0, 0, 0, 0],
            ],
            atol=1e-5,
        )
        np.testing.assert_allclose(adv, g)

    def test_main_branch_step_baseline_and_normalisation(self):
        kw = dict(step_rewards=PURE_SR, segment_id=PURE_SEG, outcome=PURE_O)
        g0 = np.zeros(2, np.int32)
        pure = jax.jit(P.pure, static_argnames=("baseline", "mask_separator", "normalize"))
        _, g = pure(
            np.zeros((2, 8)),
            PURE_MASK,
            g0,
            baseline="step",
            mask_separator=False,
            normalize=False,
            **kw,
        )
        g = np.asarray(g)
        rtok = g - np.concatenate([g[:, 1:], np.zeros((2, 1))], 1)
        # beta_A = O_B / 2 = 0.361920; beta_B = O_A / 3 = -0.199984
        np.testing.assert_allclose(rtok[0, 2], 6.6e-7 - 0.361920, atol=1e-5)
        np.testing.assert_allclose(rtok[1, 1], 0.107283 + 0.199984, atol=1e-5)
        # normalisation that skips zeros in the count but not in the variance
        _, pre = pure(np.zeros((2, 8)), PURE_MASK, g0, normalize=False, **kw)
        adv, _ = pure(np.zeros((2, 8)), PURE_MASK, g0, **kw)
        pre = np.asarray(pre)
        nz = PURE_MASK & (pre != 0)
        mu = pre[PURE_MASK].sum() / nz.sum()
        sd = np.sqrt(((pre - mu) ** 2)[PURE_MASK].sum() / nz.sum())
        np.testing.assert_allclose(adv, np.where(nz, (pre - mu) / sd, 0.0), atol=1e-5)

    def test_verl_branch_worked_example(self):
        def run(sr, seg, m, mf):
            return P.pure(
                jnp.zeros((2, 8)),
                m,
                jnp.zeros(2, jnp.int32),
                step_rewards=sr,
                segment_id=seg,
                outcome=PURE_O,
                variant="verl",
                min_form=mf,
            )

        adv, g = jax.jit(lambda *a: run(*a, "soft"))(PURE_SR, PURE_SEG, PURE_MASK)
        np.testing.assert_allclose(
            g,
            [
                [-0.599953] * 3 + [-0.599954] * 3 + [1.8e-5] * 2,
                [1.723841, 1.723841, 1.616558, 1.616558, 1.616558, 0, 0, 0],
            ],
            atol=1e-5,
        )
        np.testing.assert_allclose(
            adv,
            [[-0.836118] * 6 + [-0.508947] * 2, [1.242022] * 2 + [1.183519] * 3 + [0] * 3],
            atol=1e-5,
        )
        _, g = jax.jit(lambda *a: run(*a, "strict"))(PURE_SR, PURE_SEG, PURE_MASK)
        np.testing.assert_allclose(g, [[-0.6] * 6 + [0, 0.4], [0] * 8], atol=1e-6)

    def test_empty_mask(self):
        z = np.zeros((2, 8), bool)
        for variant in ("main", "verl"):
            fn = jax.jit(functools.partial(P.pure, variant=variant))
            adv, g = fn(
                np.zeros((2, 8)),
                z,
                np.zeros(2, np.int32),
                step_rewards=PURE_SR,
                segment_id=PURE_SEG,
            )
            assert np.isfinite(adv).all()
            np.testing.assert_array_equal(adv, 0.0)
            np.testing.assert_array_equal(g, 0.0)


class CapoTest(chex.TestCase):
    def test_voting_worked_example(self):
        # 3 steps; N=4 critiques flag {2}, {2,3}, {2}, {} (1-based) -> 0-based steps 1, 2.
        v = np.zeros((1, 4, 3), bool)
        v[0, 0, 1] = v[0, 1, 1] = v[0, 1, 2] = v[0, 2, 1] = True
        np.testing.assert_array_equal(P.capo_vote(v, rule="majority"), [[False, True, False]])
        np.testing.assert_array_equal(P.capo_vote(v, rule="intersection"), [[False] * 3])
        np.testing.assert_array_equal(P.capo_vote(v, rule="union"), [[False, True, True]])
        # a critique that did not parse does not vote: 2 of 3 valid -> majority
        jm = np.array([[True, True, True, False]])
        np.testing.assert_array_equal(
            P.capo_vote(v, jm, rule="intersection"), [[False, True, False]]
        )

    def test_token_rewards_and_group_normalisation(self):
        v = np.zeros((2, 4, 3), bool)
        v[0, 0, 1] = v[0, 1, 1] = v[0, 1, 2] = v[0, 2, 1] = True
        seg = np.array([[0, 0, 1, 1, 2, -1], [0, 1, 1, 2, 2, 2]])
        mask = seg >= 0
        o = np.array([1.0, 0.0], np.float32)
        fn = jax.jit(
            lambda v, seg, m, o: P.capo(
                jnp.zeros((2, 6)),
                m,
                jnp.zeros(2, jnp.int32),
                segment_id=seg,
                step_verdicts=v,
                outcome=o,
            )
        )
        adv, r = fn(v, seg, mask, o)
        np.testing.assert_allclose(r, [[2, 2, 1, 1, 2, 0], [0, 0, 0, 0, 0, 0]])
        vals = np.array([2, 2, 1, 1, 2] + [0] * 6, np.float64)
        want = (vals - vals.mean()) / (vals.std(ddof=1) + 1e-6)
        np.testing.assert_allclose(np.asarray(adv)[mask], want, atol=1e-5)
        np.testing.assert_array_equal(np.asarray(adv)[~mask], 0.0)


@pytest.mark.slow
def test_estimators_jit_equals_plain():
    """Every estimator of this module, un-jitted (op by op) and jitted, on the worked inputs."""
    cases = [
        (
            P.prime,
            (np.zeros((3, 3)), QMASK, G3),
            dict(logp=_garbage(Q, QMASK), ref_logp=np.zeros((3, 3)), outcome=QO),
            ("variant",),
            [dict(variant=v) for v in ("paper", "code", "verl")],
        ),
        (
            P.pure,
            (np.zeros((2, 8)), PURE_MASK, np.zeros(2, np.int32)),
            dict(step_rewards=PURE_SR, segment_id=PURE_SEG, outcome=PURE_O),
            ("variant", "min_form"),
            [dict(variant="main"), dict(variant="verl"), dict(variant="verl", min_form="strict")],
        ),
    ]
    for fn, args, arrays, static, options in cases:
        for opt in options:
            plain = fn(*args, **arrays, **opt)
            jitted = jax.jit(fn, static_argnames=static)(*args, **arrays, **opt)
            chex.assert_trees_all_close(plain, jitted, atol=1e-6)


def test_values_outside_the_mask_do_not_matter():
    rng = np.random.default_rng(5)
    pad = ~PURE_MASK
    tr = np.zeros((2, 8), np.float32)
    tr[1, 4] = 1.0
    tr_g = np.where(pad, rng.normal(size=(2, 8)) * 1e3, tr).astype(np.float32)
    seg_g = np.where(pad, rng.integers(-3, 5, size=(2, 8)), PURE_SEG)
    g = np.array([4, 4], np.int32)
    pure = jax.jit(P.pure)
    chex.assert_trees_all_close(
        pure(tr, PURE_MASK, g, step_rewards=PURE_SR, segment_id=PURE_SEG),
        pure(tr_g, PURE_MASK, g, step_rewards=PURE_SR, segment_id=seg_g),
    )
    prime = jax.jit(P.prime)
    lp = rng.normal(size=(2, 8)).astype(np.float32)
    lp_g = np.where(pad, 1e4, lp).astype(np.float32)
    chex.assert_trees_all_close(
        prime(tr, PURE_MASK, g, logp=lp, ref_logp=np.zeros((2, 8))),
        prime(tr_g, PURE_MASK, g, logp=lp_g, ref_logp=np.zeros((2, 8))),
    )
    v = rng.integers(0, 2, size=(2, 3, 3)).astype(bool)
    capo = jax.jit(P.capo)
    a1 = capo(tr, PURE_MASK, g, segment_id=PURE_SEG, step_verdicts=v)
    a2 = capo(tr_g, PURE_MASK, g, segment_id=seg_g, step_verdicts=v)
    chex.assert_trees_all_close(a1, a2)
    a0, r0 = capo(tr_g, np.zeros_like(PURE_MASK), g, segment_id=seg_g, step_verdicts=v)
    np.testing.assert_array_equal(a0, 0.0)
    np.testing.assert_array_equal(r0, 0.0)


def test_prof_keep_worked_example():
    """PROF's worked example (one group of 8, n_remove = 4): keep {a, e, f, h}."""
    from jaxrl_reason.credit.process import prof_keep

    scores = np.array(
        [[.9, .8], [.3, .4], [.7, .9], [.2, .6], [.95, .95], [.1, .2], [.8, .9], [.5, .3]]
    )  # fmt: skip
    o = np.array([1, 1, 1, 1, 1, 0, 0, 0], np.float32)
    keep = prof_keep(scores, np.ones_like(scores, bool), o, np.zeros(8, int), n_remove=4)
    np.testing.assert_array_equal(np.flatnonzero(keep), [0, 4, 5, 7])
    # Two groups of the same rows: the filter is per group.
    keep2 = prof_keep(
        np.concatenate([scores, scores]),
        np.ones((16, 2), bool),
        np.concatenate([o, o]),
        np.repeat([0, 1], 8),
        n_remove=4,
    )
    np.testing.assert_array_equal(np.flatnonzero(keep2), [0, 4, 5, 7, 8, 12, 13, 15])


def test_prof_keep_rounding_and_all_wrong():
    from jaxrl_reason.credit.process import prof_keep

    # 2 correct, 5 wrong, n_rm = 4: delta = -3 -> round(0.5) = 0: drop 4 wrong ones.
    o = np.array([1, 1, 0, 0, 0, 0, 0], np.float32)
    s = np.array([[0.5], [0.5], [0.9], [0.1], [0.8], [0.2], [0.7]])
    keep = prof_keep(s, np.ones_like(s, bool), o, np.zeros(7, int), n_remove=4)
    # Wrong rows with the highest scores disagree most: 0.9, 0.8, 0.7 and then 0.2.
    np.testing.assert_array_equal(np.flatnonzero(keep), [0, 1, 3])
