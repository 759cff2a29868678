"""Outcome estimators: hand-derived values, group invariants, edge cases, registry, jit."""

import functools

import chex
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_reason import credit

EPS = 1e-6


def _last_token_rewards(scores, lengths, t):
    """Token rewards with each row's score on its last response token, and the mask."""
    b = len(scores)
    r = np.zeros((b, t), np.float32)
    m = (np.arange(t)[None, :] < np.asarray(lengths)[:, None]).astype(np.float32)
    for i, (s, n) in enumerate(zip(scores, lengths, strict=True)):
        if n > 0:
            r[i, n - 1] = s
    return r, m


def _row_values(adv, mask):
    """The per-row constant of a row-constant advantage (0 for empty rows)."""
    adv, mask = np.asarray(adv), np.asarray(mask)
    n = mask.sum(-1)
    return np.where(n > 0, (adv * mask).sum(-1) / np.maximum(n, 1), 0.0)


# Rows: group 7 = scores 1, 3, 5 (mean 3, unbiased std 2); group 2 = a singleton with score 2;
# group -4 = all-equal 4, 4; group 10**6 = score 2 and an empty-mask row (score 0).
SCORES = [1.0, 3.0, 5.0, 2.0, 4.0, 4.0, 2.0, 9.0]
LENGTHS = [3, 1, 2, 3, 2, 3, 1, 0]
GROUPS = np.array([7, 7, 7, 2, -4, -4, 10**6, 10**6], np.int32)


class GrpoTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_hand_values(self):
        r, m = _last_token_rewards(SCORES, LENGTHS, 4)
        adv, ret = self.variant(credit.grpo)(r, m, GROUPS)
        s2 = np.sqrt(2.0)  # std of {2, 0}
        want = [-2 / (2 + EPS), 0, 2 / (2 + EPS), 2 / (1 + EPS), 0, 0, 1 / (s2 + EPS), 0]
        np.testing.assert_allclose(_row_values(adv, m), want, rtol=1e-6, atol=1e-7)
        np.testing.assert_array_equal(np.asarray(adv) * (1 - m), 0.0)  # zero outside the mask
        np.testing.assert_array_equal(ret, adv)
        assert adv.dtype == jnp.float32

    @chex.variants(with_jit=True, without_jit=True)
    def test_dr_grpo_hand_values(self):
        r, m = _last_token_rewards(SCORES, LENGTHS, 4)
        adv, _ = self.variant(credit.dr_grpo)(r, m, GROUPS)
        np.testing.assert_allclose(_row_values(adv, m), [-2, 0, 2, 2, 0, 0, 1, 0], atol=1e-6)
        no_std = self.variant(functools.partial(credit.grpo, norm_by_std=False))(r, m, GROUPS)
        np.testing.assert_array_equal(adv, no_std[0])

    @chex.variants(with_jit=True, without_jit=True)
    def test_advantages_sum_to_zero_per_group(self):
        rng = np.random.default_rng(0)
        b = 24
        scores = rng.normal(size=b).astype(np.float32) * 3
        groups = rng.permutation(np.repeat(np.arange(6), 4)).astype(np.int32) * 11 - 5
        r, m = _last_token_rewards(scores, [4] * b, 4)
        for fn in (credit.grpo, credit.dr_grpo, credit.rloo):
            rows = _row_values(self.variant(fn)(r, m, groups)[0], m)
            for g in np.unique(groups):
                np.testing.assert_allclose(rows[groups == g].sum(), 0.0, atol=1e-5)
        rows = _row_values(self.variant(credit.grpo)(r, m, groups)[0], m)
        for g in np.unique(groups):  # and unit unbiased std (up to eps)
            np.testing.assert_allclose(rows[groups == g].std(ddof=1), 1.0, rtol=1e-4)

    def test_row_permutation_equivariance(self):
        r, m = _last_token_rewards(SCORES, LENGTHS, 4)
        perm = np.array([5, 2, 7, 0, 3, 6, 1, 4])
        adv, _ = credit.grpo(r, m, GROUPS)
        adv_p, _ = credit.grpo(r[perm], m[perm], GROUPS[perm])
        np.testing.assert_allclose(adv_p, np.asarray(adv)[perm], rtol=1e-6)


class RlooTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_hand_values(self):
        r, m = _last_token_rewards(SCORES, LENGTHS, 4)
        adv, ret = self.variant(credit.rloo)(r, m, GROUPS)
        # Group 7: 1 - mean(3, 5) = -3, 3 - 3 = 0, 5 - 2 = 3; singleton keeps 2 (verl);
        # all-equal 0; {2, empty=0}: 2 - 0 = 2.
        np.testing.assert_allclose(_row_values(adv, m), [-3, 0, 3, 2, 0, 0, 2, 0], atol=1e-6)
        np.testing.assert_array_equal(ret, adv)

    @chex.variants(with_jit=True, without_jit=True)
    def test_equals_scaled_centred_score_and_leave_one_out(self):
        rng = np.random.default_rng(1)
        sizes = [2, 3, 5]
        groups = np.repeat(np.arange(3), sizes).astype(np.int32)
        scores = rng.normal(size=groups.size).astype(np.float32)
        r, m = _last_token_rewards(scores, [3] * groups.size, 3)
        rows = _row_values(self.variant(credit.rloo)(r, m, groups)[0], m)
        for g, n in zip(range(3), sizes, strict=True):
            s = scores[groups == g]
            np.testing.assert_allclose(rows[groups == g], n / (n - 1) * (s - s.mean()), rtol=1e-5)
            loo = np.array([s[i] - np.delete(s, i).mean() for i in range(n)])
            np.testing.assert_allclose(rows[groups == g], loo, rtol=1e-5, atol=1e-6)


class ReinforcePPTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_hand_values_gamma_one(self):
        r = jnp.array([[0.0, 0.0, 1.0], [0.0, 0.0, 3.0]])
        adv, ret = self.variant(credit.reinforce_pp)(r, jnp.ones((2, 3)), None)
        np.testing.assert_allclose(ret, [[1, 1, 1], [3, 3, 3]])
        # Six returns, mean 2, unbiased variance 6 / 5.
        a = 1 / np.sqrt(1.2 + 1e-8)
        np.testing.assert_allclose(adv, [[-a, -a, -a], [a, a, a]], rtol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    def test_discount_and_ragged_mask(self):
        r = jnp.array([[0.0, 0.0, 4.0], [0.0, 2.0, 9.0]])
        m = jnp.array([[1, 1, 1], [1, 1, 0]])
        fn = self.variant(functools.partial(credit.reinforce_pp, gamma=0.5))
        adv, ret = fn(r, m, jnp.zeros((2,), jnp.int32))
        np.testing.assert_allclose(ret, [[1, 2, 4], [1, 2, 0]])
        g = np.array([1, 2, 4, 1, 2.0])
        want = (g - g.mean()) / np.sqrt(g.var(ddof=1) + 1e-8)
        np.testing.assert_allclose(np.asarray(adv)[np.asarray(m) > 0], want, rtol=1e-5)
        np.testing.assert_array_equal(np.asarray(adv)[1, 2], 0.0)

    @chex.variants(with_jit=True, without_jit=True)
    def test_baseline_hand_values(self):
        # Scores 1 and 3 share a group (mean 2): -1 on one token, +1 on three tokens.
        r, m = _last_token_rewards([1.0, 3.0], [1, 3], 4)
        adv, ret = self.variant(credit.reinforce_pp_baseline)(r, m, jnp.array([0, 0]))
        # Token values -1, 1, 1, 1: mean 0.5, deviations -1.5, .5, .5, .5, unbiased var 1.
        want = np.array([[-1.5, 0, 0, 0], [0.5, 0.5, 0.5, 0]]) / np.sqrt(1 + 1e-8)
        np.testing.assert_allclose(adv, want, rtol=1e-6, atol=1e-7)
        np.testing.assert_array_equal(ret, adv)


class GaeEstimatorTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_raw_and_whitened(self):
        r = jnp.array([[0.0, 0.0, 8.0]])
        v = jnp.array([[1.0, 2.0, 4.0]])
        m = jnp.ones((1, 3))
        raw = self.variant(functools.partial(credit.gae, whiten=False))
        adv, ret = raw(r, m, None, values=v, gamma=0.5, lam=0.5)
        np.testing.assert_allclose(adv, [[0.25, 1.0, 4.0]])
        np.testing.assert_allclose(ret, [[1.25, 3.0, 8.0]])
        adv_w, ret_w = self.variant(credit.gae)(r, m, None, values=v, gamma=0.5, lam=0.5)
        a = np.array([0.25, 1.0, 4.0])
        np.testing.assert_allclose(
            adv_w, [(a - a.mean()) / np.sqrt(a.var(ddof=1) + 1e-8)], rtol=1e-5
        )
        np.testing.assert_allclose(ret_w, ret)

    def test_needs_values(self):
        with pytest.raises(ValueError, match="values"):
            credit.gae(jnp.ones((1, 2)), jnp.ones((1, 2)), None)
        with pytest.raises(ValueError, match="values has shape"):
            credit.gae(jnp.ones((1, 2)), jnp.ones((1, 2)), None, values=jnp.ones((1, 3)))


ALL = {
    "grpo": {},
    "dr_grpo": {},
    "rloo": {},
    "reinforce_pp": {"gamma": 0.9},
    "reinforce_pp_baseline": {},
    "gae": {"values": np.full((4, 3), 0.5, np.float32), "gamma": 0.9, "lam": 0.95},
}


class EdgeCaseTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_every_estimator_finite_on_edge_cases(self):
        r = np.array([[0, 0, 1], [0, 0, 1], [0, 0, 2], [0, 0, 3]], np.float32)
        cases = {
            "singletons": (np.ones((4, 3), np.float32), np.arange(4, dtype=np.int32)),
            "all_equal": (np.ones((4, 3), np.float32), np.zeros(4, np.int32)),
            "empty_mask": (np.zeros((4, 3), np.float32), np.array([0, 0, 1, 1], np.int32)),
            "one_token": (
                np.eye(4, 3, dtype=np.float32) * [[1], [0], [0], [0]],
                np.zeros(4, np.int32),
            ),
        }
        for name, kw in ALL.items():
            static = {k: v for k, v in kw.items() if k != "values"}
            fn = self.variant(functools.partial(credit.get(name), **static))
            for case, (m, g) in cases.items():
                rr = np.ones_like(r) * 1.0 if case == "all_equal" else r
                extra = {"values": kw["values"]} if "values" in kw else {}
                adv, ret = fn(rr, m, g, **extra)
                msg = f"{name} / {case}"
                assert np.all(np.isfinite(adv)) and np.all(np.isfinite(ret)), msg
                np.testing.assert_array_equal(np.asarray(adv) * (1 - m), 0.0, err_msg=msg)
                np.testing.assert_array_equal(np.asarray(ret) * (1 - m), 0.0, err_msg=msg)
                if case == "empty_mask":
                    np.testing.assert_array_equal(adv, 0.0, err_msg=msg)
                if case == "all_equal" and name in ("grpo", "dr_grpo", "rloo"):
                    np.testing.assert_allclose(adv, 0.0, atol=1e-6, err_msg=msg)

    def test_singleton_convention(self):
        r, m = _last_token_rewards([2.0, -3.0], [2, 2], 2)
        g = np.array([0, 1], np.int32)
        np.testing.assert_allclose(
            _row_values(credit.grpo(r, m, g)[0], m), [2 / (1 + EPS), -3 / (1 + EPS)]
        )
        np.testing.assert_allclose(_row_values(credit.dr_grpo(r, m, g)[0], m), [2, -3])
        np.testing.assert_allclose(_row_values(credit.rloo(r, m, g)[0], m), [2, -3])


class RegistryAndValidationTest(chex.TestCase):
    def test_registered_names(self):
        for name in ALL:
            assert credit.get(name) is getattr(credit, name)
        with pytest.raises(ValueError, match="valid names: .*grpo.*rloo"):
            credit.get("ppo_gae")

    def test_input_errors(self):
        r = jnp.ones((2, 3))
        with pytest.raises(ValueError, match="response_mask has shape"):
            credit.grpo(r, jnp.ones((2, 4)), jnp.zeros(2, jnp.int32))
        with pytest.raises(ValueError, match="group_ids must be int"):
            credit.rloo(r, jnp.ones((2, 3)), jnp.zeros(3, jnp.int32))
        with pytest.raises(ValueError, match="integers"):
            credit.grpo(r, jnp.ones((2, 3)), jnp.zeros(2, jnp.float32))
        with pytest.raises(ValueError, match=r"\[B, T\]"):
            credit.grpo(jnp.ones(3), jnp.ones(3), jnp.zeros(3, jnp.int32))

    @chex.variants(with_jit=True, without_jit=True)
    def test_group_helpers(self):
        ids = jnp.array([40, -2, 40, 7, -2], jnp.int32)
        np.testing.assert_array_equal(self.variant(credit.group_index)(ids), [2, 0, 2, 1, 0])
        mean, var, count = self.variant(credit.group_moments)(
            jnp.array([1.0, 5.0, 3.0, 9.0, 7.0]), ids
        )
        np.testing.assert_allclose(mean, [2, 6, 2, 9, 6])
        np.testing.assert_allclose(var, [2, 2, 2, 0, 2])
        np.testing.assert_allclose(count, [2, 2, 2, 1, 2])
        scores = self.variant(credit.sequence_scores)(
            jnp.array([[1.0, 2.0, 4.0], [8.0, 16.0, 32.0]]), jnp.array([[1, 1, 0], [0, 1, 1]])
        )
        np.testing.assert_allclose(scores, [3.0, 48.0])
