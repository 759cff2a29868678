"""Label-free rewards: worked examples of the notes (sections 3-4) with and without jit."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_reason.rewards.canonical import NONE_KEY, keys_to_ids
from jaxrl_reason.rewards.labelfree import (
    answer_confidence,
    empo_rewards,
    format_length_reward,
    length_reward,
    per_token_self_certainty,
    self_certainty_from_logits,
    self_certainty_reward,
    ttrl_rewards,
)

TOL = dict(rtol=0, atol=1e-6)
SC_LOGITS = jnp.array([[[2.0, 1.0, 0.0], [0.0, 0.0, 0.0], [5.0, 0.0, 0.0]]])


def _grpo(r, eps=1e-6):
    r = np.asarray(r, np.float64)
    return (r - r.mean()) / (r.std(ddof=1) + eps)


class SelfCertaintyTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_worked_example(self):
        kl = self.variant(per_token_self_certainty)(SC_LOGITS)
        np.testing.assert_allclose(kl[0], [0.308994, 0.0, 2.248107], **TOL)
        # The official code's value lse - mean is the KL plus log|V|.
        code = jax.nn.logsumexp(SC_LOGITS, -1) - SC_LOGITS.mean(-1)
        np.testing.assert_allclose(code[0], [1.407606, 1.098612, 3.346719], **TOL)
        np.testing.assert_allclose(code - kl, math.log(3), **TOL)
        full = self.variant(self_certainty_from_logits)(SC_LOGITS, jnp.ones((1, 3)))
        np.testing.assert_allclose(full, [0.852367], **TOL)
        np.testing.assert_allclose(full + math.log(3), [1.950979], **TOL)
        masked = self.variant(self_certainty_from_logits)(SC_LOGITS, jnp.array([[1, 1, 0]]))
        np.testing.assert_allclose(masked, [0.154497], **TOL)

    def test_temperature_as_verl(self):
        kl_t2 = per_token_self_certainty(SC_LOGITS, temperature=2.0)
        np.testing.assert_allclose(kl_t2[0] + math.log(3), [1.180270, 1.098612, 1.818675], **TOL)

    @chex.variants(with_jit=True, without_jit=True)
    def test_reduction_of_kernel_output_matches_reference(self):
        # The kernel emits per-token KL(U||p); reducing it equals the full-logit reference.
        key = jax.random.PRNGKey(0)
        logits = 3.0 * jax.random.normal(key, (4, 7, 50))
        mask = jax.random.uniform(jax.random.PRNGKey(1), (4, 7)) > 0.3
        per_tok = per_token_self_certainty(logits)
        # independent numpy KL(U||p) = -(1/V) sum log(V p)
        z = np.asarray(logits, np.float64)
        lp = z - z.max(-1, keepdims=True)
        lp = lp - np.log(np.exp(lp).sum(-1, keepdims=True))  # float64 log-softmax
        kl_np = -np.mean(np.log(50.0) + lp, axis=-1)
        np.testing.assert_allclose(per_tok, kl_np, rtol=1e-5, atol=1e-5)
        got = self.variant(self_certainty_reward)(per_tok, mask)
        m = np.asarray(mask)
        want = (kl_np * m).sum(-1) / np.maximum(m.sum(-1), 1)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got, self_certainty_from_logits(logits, mask), rtol=1e-6)
        assert float(self_certainty_reward(per_tok, jnp.zeros((4, 7)))[0]) == 0.0


class CrewTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_worked_example(self):
        lp = jnp.log(jnp.array([[0.3, 0.9, 0.6, 0.1], [0.5, 0.5, 0.5, 0.5]]))
        ans = jnp.array([[0, 1, 1, 0], [0, 0, 0, 0]])
        got = self.variant(answer_confidence)(lp, ans)
        np.testing.assert_allclose(got, [0.75, 0.0], **TOL)
        # 0.75 is the mean of the answer tokens' probabilities: not their geometric mean
        # sqrt(0.9 * 0.6) = 0.734847 nor their joint probability 0.54.


class EmpoTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_worked_example_trl_and_verl(self):
        answers = ["4", "4", "5", NONE_KEY]
        ids = jnp.asarray(keys_to_ids(answers))
        valid = jnp.array([a != NONE_KEY for a in answers])
        g = jnp.zeros(4, jnp.int32)
        f = self.variant(empo_rewards, static_argnames=("rule",))
        r, ent, keep = f(ids, g, valid, rule="trl")
        np.testing.assert_allclose(ent, 1.039721, **TOL)
        assert float(ent[0]) < math.log(4) and bool(jnp.all(keep))
        np.testing.assert_allclose(r, [0.5, 0.5, 0.25, 0.0], **TOL)
        # the notes' EMPO advantages use ddof=1 and no eps
        np.testing.assert_allclose(
            _grpo(np.asarray(r), eps=0.0), [0.783349, 0.783349, -0.261116, -1.305582], **TOL
        )
        r, _, _ = f(ids, g, valid, rule="verl")
        np.testing.assert_allclose(r, [0.5, 0.5, 0.25, 0.25], **TOL)

    def test_all_distinct_group_is_filtered_and_groups_are_separate(self):
        ids = jnp.array([0, 1, 2, 3, 4, 4, 4, 5])
        g = jnp.array([0, 0, 0, 0, 1, 1, 1, 1])
        empo = jax.jit(empo_rewards, static_argnames=("rule",))
        r, ent, keep = empo(ids, g)
        np.testing.assert_array_equal(keep, [False] * 4 + [True] * 4)
        np.testing.assert_allclose(r, [0, 0, 0, 0, 0.75, 0.75, 0.75, 0.25], **TOL)
        np.testing.assert_allclose(ent[:4], math.log(4), **TOL)
        # verl: two empty answers are two singleton clusters, TRL: one shared cluster.
        valid = jnp.array([True, True, False, False])
        ids = jnp.array([0, 0, 9, 9])
        g = jnp.zeros(4, jnp.int32)
        np.testing.assert_allclose(
            empo(ids, g, valid, rule="verl")[0], [0.5, 0.5, 0.25, 0.25], **TOL
        )
        np.testing.assert_allclose(empo(ids, g, valid, rule="trl")[0], [0.5, 0.5, 0.0, 0.0], **TOL)


class TtrlTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_worked_examples(self):
        ans = ["12", "12", "7", "12", NONE_KEY, "7"]
        ids = jnp.asarray(keys_to_ids(ans))
        valid = jnp.array([a != NONE_KEY for a in ans])
        f = self.variant(ttrl_rewards, static_argnames=("n_train",))
        r, train, _ = f(ids, jnp.zeros(6, jnp.int32), valid)
        np.testing.assert_array_equal(r, [1, 1, 0, 1, 0, 0])
        assert bool(jnp.all(train))
        # tie -> first encountered: ["7", "12", "12", "7"] votes "7"
        r, _, maj = f(jnp.array([7, 12, 12, 7]), jnp.zeros(4, jnp.int32))
        np.testing.assert_array_equal(r, [1, 0, 0, 1])
        np.testing.assert_array_equal(maj, [True, False, False, True])

    def test_vote_over_n_train_on_subset_and_no_label(self):
        # two groups of 4 votes; train on the first 2 of each
        ids = jnp.array([3, 5, 5, 3, 8, 8, 1, 8])
        g = jnp.array([0, 0, 0, 0, 1, 1, 1, 1])
        ttrl = jax.jit(ttrl_rewards, static_argnames=("n_train",))
        r, train, _ = ttrl(ids, g, n_train=2)
        np.testing.assert_array_equal(r, [1, 0, 0, 1, 1, 1, 0, 1])
        np.testing.assert_array_equal(train, [1, 1, 0, 0, 1, 1, 0, 0])
        # interleaved groups: rank within group follows sample order
        r, train, _ = ttrl(jnp.array([1, 2, 1, 2]), jnp.array([0, 1, 0, 1]), n_train=1)
        np.testing.assert_array_equal(train, [1, 1, 0, 0])
        # "no answer" wins the vote: no pseudo-label, reward 0 everywhere
        r, _, _ = ttrl(
            jnp.array([0, 0, 1]), jnp.zeros(3, jnp.int32), jnp.array([False, False, True])
        )
        np.testing.assert_array_equal(r, [0, 0, 0])


class FormatLengthTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_worked_table(self):
        L = jnp.array([0.0, 768.0, 1536.0, 2304.0, 2764.8, 3072.0])
        f = self.variant(format_length_reward)
        np.testing.assert_allclose(
            length_reward(L / 3072.0), [0.0, 0.75, 1.0, 0.5, -0.28, -1.0], atol=1e-6
        )
        np.testing.assert_allclose(f(L, jnp.ones(6)), [1.0, 1.75, 2.0, 1.5, 0.72, 0.0], atol=1e-6)
        np.testing.assert_allclose(f(L, jnp.zeros(6)), [0.0, 0.0, 0.0, 0.0, -0.28, -1.0], atol=1e-6)
        # code form: format score 0.5 (answer ok, no <think> tags)
        np.testing.assert_allclose(f(L[1:2], jnp.array([0.5])), [1.25], atol=1e-6)

    def test_turning_point_polyline_and_errors(self):
        np.testing.assert_allclose(
            length_reward(jnp.array([0.4, 0.9]), turning_point=0.8), [0.75, 0.5], atol=1e-6
        )
        np.testing.assert_allclose(
            length_reward(jnp.array([0.25, 0.5, 0.75, 1.0]), shape="polyline"),
            [0.5, 1.0, 0.0, -1.0],
            atol=1e-6,
        )  # 2x on [0, 1/2], 3 - 4x on [1/2, 1]
        import pytest

        with pytest.raises(ValueError, match="turning_point"):
            length_reward(jnp.array([0.1]), turning_point=1.0)


def test_self_certainty_gradient_is_softmax_minus_uniform():
    # d/dz [logsumexp(z) - mean(z) - log V] = softmax(z) - 1/V: the reference is differentiable
    # and its gradient is what a kernel's backward pass must reproduce.
    logits = 2.0 * jax.random.normal(jax.random.PRNGKey(3), (2, 5, 11))
    mask = jnp.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    g = jax.jit(jax.grad(lambda z: jnp.sum(self_certainty_from_logits(z, mask))))(logits)
    n = mask.sum(-1, keepdims=True)[..., None]
    want = (jax.nn.softmax(logits) - 1.0 / 11) * mask[..., None] / n
    np.testing.assert_allclose(g, want, rtol=1e-5, atol=1e-7)


def test_ttrl_and_empo_match_python_references_on_random_groups():
    from collections import Counter

    ttrl = jax.jit(ttrl_rewards, static_argnames=("n_train",))
    empo = jax.jit(empo_rewards, static_argnames=("rule",))
    rng = np.random.default_rng(0)
    g = np.repeat(np.arange(3), 5).astype(np.int32)  # 3 groups of 5, fixed shapes: one compile
    for _ in range(25):
        ids = rng.integers(0, 4, 15).astype(np.int32)
        valid = ids != 0  # id 0 plays "no answer"
        r, train, _ = ttrl(ids, g, valid, n_train=3)
        r_e, ent, _ = empo(ids, g, valid, rule="trl")
        for k in range(3):
            a = [int(x) for x in ids[g == k]]
            y = Counter(a).most_common(1)[0][0]  # TTRL's vote: ties to the first seen
            want = [float(x == y and y != 0) for x in a]
            np.testing.assert_array_equal(np.asarray(r)[g == k], want)
            np.testing.assert_array_equal(np.asarray(train)[g == k], [1, 1, 1, 0, 0])
            # EMPO TRL rule: cluster frequency, "no answer" earns 0, all-distinct filtered
            freq = Counter(a)
            p = np.array([freq[x] / 5 for x in a])
            h = -sum(c / 5 * np.log(c / 5) for c in freq.values())
            np.testing.assert_allclose(np.asarray(ent)[g == k], h, atol=1e-6)
            want_e = np.where(np.array(a) != 0, p, 0.0) * (h < np.log(5))
            np.testing.assert_allclose(np.asarray(r_e)[g == k], want_e, atol=1e-6)
