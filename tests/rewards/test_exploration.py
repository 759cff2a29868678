"""Outcome-based exploration: worked example of the notes (section 1), resume, jit."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_reason.rewards.canonical import keys_to_ids
from jaxrl_reason.rewards.exploration import (
    AnswerHistory,
    ExplorationConfig,
    all_correct_groups,
    apply_exploration_bonus,
    batch_repetition_penalty,
    exploration_bonus,
    ucb_bonus,
)

TOL = dict(rtol=0, atol=1e-6)
# Worked example: history {"12": 5, "7": 1}; batch ["12", "12", "7", "3"]; gold "12".
BATCH = ["12", "12", "7", "3"]
GROUPS = np.zeros(4, np.int32)


def _history():
    h = AnswerHistory(max_answers_per_prompt=8)
    h.observe(["x"] * 6, ["12"] * 5 + ["7"])
    return h


def _grpo(r, eps=1e-6):
    r = np.asarray(r, np.float64)
    return (r - r.mean()) / (r.std(ddof=1) + eps)


class UcbWorkedExample(chex.TestCase):
    def test_counts_included_and_excluded(self):
        n_incl = _history().observe(["x"] * 4, BATCH, include_current=True)
        np.testing.assert_array_equal(n_incl, [7, 7, 2, 1])
        n_excl = _history().observe(["x"] * 4, BATCH, include_current=False)
        np.testing.assert_array_equal(n_excl, [5, 5, 1, 0])
        h = _history()
        h.observe(["x"] * 4, BATCH)
        assert h.counts("x") == {"12": 7, "7": 2, "3": 1}

    @chex.variants(with_jit=True, without_jit=True)
    def test_variants(self):
        n_incl = jnp.array([7, 7, 2, 1])
        n_excl = jnp.array([5, 5, 1, 0])
        g = jnp.asarray(GROUPS)

        def f(n, g, variant, b0, baseline):
            return ucb_bonus(n, variant=variant, b0=b0, group_ids=g, baseline=baseline)

        f = self.variant(f, static_argnums=(2, 3, 4))
        b = f(n_incl, g, "ucb", 0.5, "plain")
        np.testing.assert_allclose(b, [0.377964, 0.377964, 0.707107, 1.0], **TOL)
        np.testing.assert_allclose(0.2 * b, [0.075593, 0.075593, 0.141421, 0.2], **TOL)
        np.testing.assert_allclose(
            f(n_excl, g, "ucb", 0.5, "plain"), [0.447214, 0.447214, 1.0, 1.0], **TOL
        )
        con = f(n_incl, g, "ucb_con", 0.5, "plain")
        np.testing.assert_allclose(con, [-0.122036, -0.122036, 0.207107, 0.5], **TOL)
        np.testing.assert_allclose(0.2 * con, [-0.024407, -0.024407, 0.041421, 0.1], **TOL)
        np.testing.assert_allclose(
            f(n_incl, g, "ucb_con", 1.0, "plain"), [-0.622036, -0.622036, -0.292893, 0.0], **TOL
        )
        np.testing.assert_allclose(
            f(n_incl, g, "ucb_mean", 0.5, "plain"),
            [-0.237794, -0.237794, 0.091348, 0.384241],
            **TOL,
        )
        np.testing.assert_allclose(
            f(n_incl, g, "ucb_mean", 0.5, "loo"), [-0.317059, -0.317059, 0.121797, 0.512321], **TOL
        )

    def test_mean_is_per_group(self):
        # Two groups: each group's baseline uses its own samples only.
        n = jnp.array([7, 7, 2, 1, 4, 4])
        g = jnp.array([0, 0, 0, 0, 1, 1])
        b = np.asarray(ucb_bonus(n, variant="ucb_mean", group_ids=g))
        np.testing.assert_allclose(b[:4], [-0.237794, -0.237794, 0.091348, 0.384241], **TOL)
        np.testing.assert_allclose(b[4:], 0.0, atol=1e-7)
        loo_single = ucb_bonus(
            jnp.array([3]), variant="ucb_mean", group_ids=jnp.array([0]), baseline="loo"
        )
        np.testing.assert_array_equal(loo_single, [0.0])

    @chex.variants(with_jit=True, without_jit=True)
    def test_batch_penalty_and_final_advantage(self):
        ids = jnp.asarray(keys_to_ids(BATCH))
        pen = self.variant(batch_repetition_penalty)(ids, jnp.asarray(GROUPS))
        np.testing.assert_allclose(pen, [-0.25, -0.25, 0.0, 0.0], **TOL)
        np.testing.assert_allclose(0.2 * pen, [-0.05, -0.05, 0.0, 0.0], **TOL)
        ahat = _grpo([1, 1, 0, 0])
        np.testing.assert_allclose(ahat, [0.866024, 0.866024, -0.866024, -0.866024], **TOL)
        bonus = ucb_bonus(jnp.array([7, 7, 2, 1]), variant="ucb_con", b0=0.5)
        mask = jnp.ones((4, 3))
        adv = self.variant(apply_exploration_bonus)(
            jnp.asarray(ahat, jnp.float32)[:, None] * mask, bonus, mask
        )
        want = [0.841617, 0.841617, -0.824603, -0.766024]
        np.testing.assert_allclose(adv, np.repeat(np.array(want)[:, None], 3, 1), atol=2e-6)

    def test_batch_penalty_groups_and_valid(self):
        ids = jnp.array([1, 1, 1, 2, 1, 1])
        g = jnp.array([0, 0, 0, 0, 1, 1])
        pen = batch_repetition_penalty(ids, g)
        np.testing.assert_allclose(pen, [-0.5, -0.5, -0.5, 0.0, -0.5, -0.5], **TOL)
        valid = jnp.array([True, True, False, True, True, True])
        pen = batch_repetition_penalty(ids, g, valid=valid)
        np.testing.assert_allclose(pen, [-1 / 3, -1 / 3, 0.0, 0.0, -0.5, -0.5], **TOL)

    def test_gate_and_answer_token_mask(self):
        correct = jnp.array([1, 1, 0, 1, 1, 1])
        g = jnp.array([0, 0, 0, 1, 1, 1])
        gate = all_correct_groups(correct, g)
        np.testing.assert_array_equal(gate, [False] * 3 + [True] * 3)
        resp = jnp.array([[1, 1, 1, 0]] * 6)
        ans = jnp.array([[0, 0, 1, 0]] * 6)
        adv = apply_exploration_bonus(
            jnp.zeros((6, 4)), jnp.ones(6), resp, coef=0.2, answer_mask=ans, gate=gate
        )
        want = np.array([[0.2, 0.2, 0, 0]] * 3 + [[0, 0, 0, 0]] * 3)
        np.testing.assert_allclose(adv, want, **TOL)

    def test_host_glue_matches_worked_example(self):
        h = _history()
        cfg = ExplorationConfig(variant="ucb_con", b0=0.5, coef=0.2)
        got = exploration_bonus(cfg, h, ["x"] * 4, BATCH, GROUPS)
        np.testing.assert_allclose(got, [-0.024407, -0.024407, 0.041421, 0.1], **TOL)
        cfg = ExplorationConfig(variant="batch", gate_all_correct=True)
        got = exploration_bonus(cfg, None, ["x"] * 4, BATCH, GROUPS, correct=np.ones(4, bool))
        np.testing.assert_array_equal(got, 0.0)
        with pytest.raises(ValueError, match="variant"):
            ExplorationConfig(variant="ucbx")


class AnswerHistoryTest(chex.TestCase):
    def test_eviction_least_recently_seen(self):
        h = AnswerHistory(max_answers_per_prompt=3)
        h.observe([0, 0, 0], ["a", "a", "b"])  # step 1
        h.observe([0], ["c"])  # step 2
        h.observe([0, 0], ["a", "d"])  # step 3: table would be a,b,c,d; b is stalest
        assert h.counts(0) == {"a": 3, "c": 1, "d": 1}
        # Same recency: the smaller count goes first.
        h2 = AnswerHistory(max_answers_per_prompt=2)
        n = h2.observe([0, 0, 0, 0], ["a", "a", "b", "c"])
        np.testing.assert_array_equal(n, [2, 2, 1, 1])  # counts before eviction
        assert h2.counts(0) == {"a": 2, "c": 1}

    def test_prompt_cap_and_errors(self):
        h = AnswerHistory(max_answers_per_prompt=4, max_prompts=2)
        h.observe([1], ["x"])
        h.observe([2], ["x"])
        h.observe([1], ["y"])
        h.observe([3], ["z"])  # prompt 2 is the least recently observed
        assert len(h) == 2 and h.counts(2) == {} and h.counts(1) == {"x": 1, "y": 1}
        with pytest.raises(TypeError, match="int or str"):
            h.observe([(1, 2)], ["x"])
        with pytest.raises(ValueError, match="one prompt id per sample"):
            h.observe([1, 2], ["x"])
        with pytest.raises(ValueError, match="max_answers_per_prompt"):
            AnswerHistory(0)

    def test_exact_resume_through_orbax(self):
        import tempfile

        import orbax.checkpoint as ocp

        rng = np.random.default_rng(0)
        answers = [str(v) for v in range(12)] + ["<none>"]

        def batch():
            prompts = [int(p) for p in np.repeat(rng.integers(0, 5, 4), 4)]
            keys = [answers[i] for i in rng.integers(0, len(answers), 16)]
            return prompts, keys

        batches = [batch() for _ in range(12)]
        g = np.repeat(np.arange(4), 4).astype(np.int32)
        full = AnswerHistory(max_answers_per_prompt=6, max_prompts=4)
        want = [
            np.asarray(ucb_bonus(full.observe(p, k), variant="ucb_mean", group_ids=g))
            for p, k in batches
        ]
        part = AnswerHistory(max_answers_per_prompt=6, max_prompts=4)
        for p, k in batches[:7]:
            part.observe(p, k)
        with tempfile.TemporaryDirectory() as d:
            mngr = ocp.CheckpointManager(d)
            mngr.save(7, args=ocp.args.Composite(history=ocp.args.JsonSave(part.state_dict())))
            mngr.wait_until_finished()
            restored = mngr.restore(7, args=ocp.args.Composite(history=ocp.args.JsonRestore()))
            mngr.close()
        resumed = AnswerHistory.from_state_dict(restored["history"])
        assert resumed == part
        got = [
            np.asarray(ucb_bonus(resumed.observe(p, k), variant="ucb_mean", group_ids=g))
            for p, k in batches[7:]
        ]
        for a, b in zip(got, want[7:], strict=True):
            np.testing.assert_array_equal(a, b)
        assert resumed.state_dict() == full.state_dict()


def test_config_makes_a_history_with_its_cap():
    h = ExplorationConfig(max_answers_per_prompt=2).make_history()
    h.observe([0, 0, 0], ["a", "b", "c"])
    assert len(h.counts(0)) == 2


def test_batch_penalty_and_loo_match_python_on_random_groups():
    pen_fn = jax.jit(batch_repetition_penalty)
    ucb = jax.jit(ucb_bonus, static_argnames=("variant", "baseline"))
    rng = np.random.default_rng(1)
    g = np.repeat(np.arange(4), 4).astype(np.int32)[rng.permutation(16)]  # interleaved groups
    for _ in range(20):
        ids = rng.integers(0, 3, 16).astype(np.int32)
        n = rng.integers(0, 9, 16)
        pen = np.asarray(pen_fn(ids, g))
        plain = np.asarray(ucb(n, variant="ucb_mean", group_ids=g, baseline="plain"))
        loo = np.asarray(ucb(n, variant="ucb_mean", group_ids=g, baseline="loo"))
        b = np.where(n > 0, 1 / np.sqrt(np.maximum(n, 1)), 1.0)
        for i in range(16):
            same = [j for j in range(16) if g[j] == g[i]]
            want = -(sum(ids[j] == ids[i] for j in same) - 1) / len(same)
            np.testing.assert_allclose(pen[i], want, atol=1e-7)
            np.testing.assert_allclose(plain[i], b[i] - np.mean(b[same]), atol=1e-6)
            others = [j for j in same if j != i]
            np.testing.assert_allclose(loo[i], b[i] - np.mean(b[others]), atol=1e-6)
