"""GiGPO and IGPO against research/trees_agents.md sections 4 and 5."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_reason import credit
from jaxrl_reason.credit import agents as A

# GiGPO worked example: N=3 trajectories, gamma 0.95; states s0, s1, s2 -> anchor ids 0, 1, 2.
# Padded turns hold garbage (rewards 1e4, anchor 0 = s0's id: must not join s0's group).
R = np.array([[0, 0, 10], [0, 0, 0], [0, 10, 1e4]], np.float32)
TM = np.array([[1, 1, 1], [1, 1, 1], [1, 1, 0]], bool)
ANC = np.array([[0, 1, 2], [0, 0, 1], [0, 2, 0]], np.int32)
G = np.zeros(3, np.int32)
# per-turn (rows T1 t1..t3, T2 t1..t3, T3 t1..t2) from the table
A_MEAN = [[7.7271, 8.0833, 3.3333], [-11.2979, -11.2979, -11.4167], [8.2021, 3.3333, 0]]
A_STD = [[1.3984, 1.2845, 0.5774], [-2.0202, -2.0202, -1.8618], [1.4872, 0.5774, 0]]

jit_steps = jax.jit(
    A.gigpo_step_advantages, static_argnames=("mode", "episode_stats", "gamma", "omega")
)


class GiGPOTest(chex.TestCase):
    def test_table(self):
        a, ret = jit_steps(R, TM, G, ANC, mode="mean_norm")
        np.testing.assert_allclose(a, A_MEAN, atol=1e-4)
        np.testing.assert_allclose(ret, [[9.025, 9.5, 10], [0, 0, 0], [9.5, 10, 0]], atol=1e-5)
        a, _ = jit_steps(R, TM, G, ANC)
        np.testing.assert_allclose(a, A_STD, atol=1e-4)
        # hand: s0 group {9.025, 0, 0, 9.5}; A_S(T1 t1) = (9.025 - 4.63125) / std_unbiased
        s0 = np.array([9.025, 0, 0, 9.5])
        a_e = (10 - 20 / 3) / np.std([10, 0, 10], ddof=1)
        np.testing.assert_allclose(a[0, 0], a_e + (9.025 - s0.mean()) / s0.std(ddof=1), atol=1e-5)

    def test_cross_step_episode_statistics(self):
        a, _ = jit_steps(R, TM, G, ANC, omega=0.0, episode_stats="step")
        want = np.where(TM, np.array([0.7246, -1.2076, 0.7246])[:, None], 0.0)
        np.testing.assert_allclose(a, want, atol=1e-4)

    def test_all_distinct_states_reduce_to_episode_advantage(self):
        rng = np.random.default_rng(0)
        r = rng.normal(size=(6, 4)).astype(np.float32)
        tm = np.arange(4)[None, :] < np.array([[4], [2], [3], [1], [4], [4]])
        g = np.array([0, 0, 0, 1, 1, 1], np.int32)
        anc = np.arange(24, dtype=np.int32).reshape(6, 4)  # every state unique
        a, _ = jit_steps(r, tm, g, anc)
        a_e, _ = jit_steps(r, tm, g, anc, omega=0.0)
        np.testing.assert_allclose(a, a_e, atol=1e-6)
        ep = np.where(tm, r, 0).sum(-1)
        for grp in (0, 1):
            sel = g == grp
            want = (ep[sel] - ep[sel].mean()) / (ep[sel].std(ddof=1) + 1e-6)
            np.testing.assert_allclose(np.asarray(a)[sel, 0], want, atol=1e-5)
        # the same anchor id in another episode group is another state
        a2, _ = jit_steps(r, tm, g, np.where(g[:, None] == 0, anc, anc - 12))
        np.testing.assert_allclose(a2, a, atol=1e-6)

    def test_token_estimator(self):
        # turns: T1 3 turns, T2 3 turns, T3 2 turns; observation tokens (mask 0) in between.
        seg = np.array([[0, 0, 1, 1, 2, 2, -1], [0, 1, 1, 1, 2, 2, 2], [0, 0, 0, 1, 1, -1, -1]])
        mask = (seg >= 0) & ~np.eye(3, 7, k=1, dtype=bool)  # one observation token per row
        tr = np.zeros(seg.shape, np.float32)
        tr[0, 5] = 10.0
        tr[2, 4] = 10.0
        tr[0, 6] = 1e4  # turn id -1: garbage
        fn = jax.jit(
            lambda tr, m, g, seg, anc: credit.get("gigpo")(tr, m, g, segment_id=seg, anchor_ids=anc)
        )
        adv, _ = fn(tr, mask, G, seg, ANC)
        want = np.take_along_axis(np.asarray(A_STD), np.maximum(seg, 0), 1) * mask
        np.testing.assert_allclose(adv, want, atol=1e-4)

    def test_empty(self):
        a, ret = jit_steps(R, np.zeros_like(TM), G, ANC)
        np.testing.assert_array_equal(a, 0.0)
        np.testing.assert_array_equal(ret, 0.0)


P = np.array([[0.1, 0.3, 0.6], [0.1, 0.05, 0.7]], np.float32)  # 0.7: padding garbage
PTM = np.array([[1, 1, 1], [1, 1, 0]], bool)
F1 = np.array([1.0, 0.0], np.float32)
SEG = np.array([[0, 0, 1, 1, 2, 2], [0, 0, 1, 1, -1, -1]])


class IGPOTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_turn_rewards(self):
        r = self.variant(A.igpo_turn_rewards)(P, PTM, F1)
        np.testing.assert_allclose(r, [[0.2, 0.3, 1.0], [-0.05, 0.0, 0.0]], atol=1e-6)
        r = jax.jit(functools.partial(A.igpo_turn_rewards, info_gain="log_prob_diff"))(P, PTM, F1)
        np.testing.assert_allclose(r, [[1.0986, 0.6931, 1.0], [-0.6931, 0.0, 0.0]], atol=1e-4)

    def test_table_joint(self):
        def run(seg, m, gamma):
            return A.igpo(
                jnp.zeros((2, 6)),
                m,
                jnp.zeros(2, jnp.int32),
                segment_id=seg,
                answer_probs=P,
                final_score=F1,
                gamma=gamma,
            )

        mask = SEG >= 0
        adv, _ = jax.jit(functools.partial(run, gamma=1.0))(SEG, mask)
        want = np.array([[1.6695, 1.9080, 1.8815], [-1.6695, -0.7685, 0]])
        np.testing.assert_allclose(adv, np.repeat(want, 2, 1) * mask, atol=1e-4)
        adv, _ = jax.jit(functools.partial(run, gamma=0.9))(SEG, mask)
        want = np.array([[1.3094, 1.7198, 1.8815], [-1.5926, -0.7685, 0]])
        np.testing.assert_allclose(adv, np.repeat(want, 2, 1) * mask, atol=1e-4)

    def test_table_separate_and_hand(self):
        mask = SEG >= 0
        fn = jax.jit(credit.get("igpo"), static_argnames="norm")
        adv, ret = fn(
            jnp.zeros((2, 6)),
            mask,
            jnp.zeros(2, jnp.int32),
            segment_id=SEG,
            answer_probs=P,
            final_score=F1,
            norm="separate",
        )
        want = np.array([[2.3587, 2.0190, 1.0], [-2.3587, -1.0, 0]])
        np.testing.assert_allclose(adv, np.repeat(want, 2, 1) * mask, atol=1e-4)
        # returns: undiscounted sums of the raw turn rewards
        np.testing.assert_allclose(ret[0, ::2], [1.5, 1.3, 1.0], atol=1e-6)
        # hand: joint pool {0.2, 0.3, 1.0, -0.05, 0.0}: mean 0.29, var_pop 0.1424
        adv, _ = fn(
            jnp.zeros((2, 6)),
            mask,
            jnp.zeros(2, jnp.int32),
            segment_id=SEG,
            answer_probs=P,
            final_score=F1,
        )
        sd = np.sqrt(0.1424 + 1e-8) + 1e-6
        np.testing.assert_allclose(adv[1, 2], (0.0 - 0.29) / sd, atol=1e-5)
        # final score from token rewards; observation tokens masked out get 0
        tr = np.zeros((2, 6), np.float32)
        tr[0, 5] = 1.0
        m2 = mask.copy()
        m2[0, 3] = False
        adv2, _ = fn(tr, m2, jnp.zeros(2, jnp.int32), segment_id=SEG, answer_probs=P)
        np.testing.assert_allclose(adv2, np.where(m2, adv, 0.0), atol=1e-6)


@pytest.mark.slow
def test_estimators_jit_equals_plain():
    seg = np.array([[0, 0, 1, 1, 2, 2, -1], [0, 1, 1, 1, 2, 2, 2], [0, 0, 0, 1, 1, -1, -1]])
    mask = seg >= 0
    tr = np.zeros(seg.shape, np.float32)
    tr[0, 5] = tr[2, 4] = 10.0
    args = (tr, mask, G)
    for opt in (dict(mode="mean_norm"), dict(episode_stats="step")):
        fn = functools.partial(A.gigpo, segment_id=seg, anchor_ids=ANC, **opt)
        chex.assert_trees_all_close(fn(*args), jax.jit(fn)(*args), atol=1e-5)
    probs = np.array([[0.1, 0.3, 0.6], [0.2, 0.4, 0.1], [0.1, 0.05, 0.7]], np.float32)
    for opt in (dict(norm="joint"), dict(norm="separate", info_gain="log_prob_diff")):
        fn = functools.partial(A.igpo, segment_id=seg, answer_probs=probs, **opt)
        chex.assert_trees_all_close(fn(*args), jax.jit(fn)(*args), atol=1e-5)


def test_igpo_empty_mask_gives_zeros():
    adv, ret = jax.jit(A.igpo)(
        np.ones((2, 6)),
        np.zeros((2, 6), bool),
        np.zeros(2, np.int32),
        segment_id=SEG,
        answer_probs=P,
    )
    assert np.isfinite(adv).all()
    np.testing.assert_array_equal(adv, 0.0)
    np.testing.assert_array_equal(ret, 0.0)
