"""Tree values and advantages against research/trees_agents.md (sections 0-3) and
research/process_credit.md 4b, random-forest cross-checks and properties."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_reason import credit
from jaxrl_reason.credit import trees as T

# trees_agents.md 1.5: 0 R, 1 S0, 2 S1, 3 S2 (leaf 1), 4 b1 (0), 5 b2 (0), 6 c1 (1), 7 c2 (0)
TRL_PARENT = np.array([-1, 0, 1, 2, 1, 1, 2, 2], np.int32)
TRL_LEAF = np.array([0, 0, 0, 1, 1, 1, 1, 1], bool)
TRL_R = np.array([5.0, -3.0, 9.0, 1, 0, 0, 1, 0], np.float32)  # internal rewards: garbage
ALL = np.ones(8, bool)

# trees_agents.md 3: root -> {a, b, c}; a -> {a1=1, a2=1}; b -> {b1=0, b2=1}; c leaf r=0
SPO_PARENT = np.array([-1, 0, 0, 0, 1, 1, 2, 2], np.int32)
SPO_LEAF = np.array([0, 0, 0, 1, 1, 1, 1, 1], bool)
SPO_R = np.array([0, 0, 0, 0, 1, 1, 0, 1], np.float32)

jit_treerl_nodes = jax.jit(T.treerl_node_advantages, static_argnames="variant")
_jit_spo_nodes = jax.jit(T.spo_tree_node_advantages, static_argnames="adv_method")
_jit_sibling = jax.jit(T.sibling_node_advantages)
jit_values = jax.jit(T.tree_values, static_argnames=("mode", "method"))
N_PAD = 8  # small hand cases are padded to one size: one compilation per function


def _padded(fn):
    """Runs ``fn`` on the forest padded to N_PAD nodes with garbage, returns the first n."""

    def run(parent, leaf, r, valid=None, **kw):
        n, k = len(parent), max(N_PAD - len(parent), 0)
        valid = np.ones(n, bool) if valid is None else valid
        kw = {
            key: np.concatenate([x, np.zeros(k, x.dtype)]) if isinstance(x, np.ndarray) else x
            for key, x in kw.items()
        }
        args = (
            np.concatenate([parent, np.full(k, 0)]).astype(np.int32),
            np.concatenate([leaf, np.ones(k, bool)]),
            np.concatenate([r, np.full(k, 9.0)]).astype(np.float32),
            np.concatenate([valid, np.zeros(k, bool)]),
        )
        return tuple(np.asarray(x)[:n] for x in fn(*args, **kw))

    return run


treerl_nodes = _padded(jit_treerl_nodes)
spo_nodes = _padded(_jit_spo_nodes)
sibling_nodes = _padded(_jit_sibling)


def random_forest(rng, n_valid, n_pad, n_roots=2):
    """Random forest with shuffled node ids, garbage in padding and on internal rewards."""
    par = np.full(n_valid, -1)
    for i in range(n_roots, n_valid):
        par[i] = rng.integers(0, i)
    perm = rng.permutation(n_valid)  # node i gets id perm[i]: parents need not come first
    parent = np.full(n_valid, -1)
    parent[perm] = np.where(par >= 0, perm[np.maximum(par, 0)], -1)
    has_child = np.zeros(n_valid, bool)
    has_child[parent[parent >= 0]] = True
    leaf = ~has_child
    reward = np.where(leaf, rng.integers(0, 2, n_valid), rng.normal(size=n_valid) * 100)
    pad_parent = rng.integers(-1, n_valid + n_pad, size=n_pad)
    return (
        np.concatenate([parent, pad_parent]).astype(np.int32),
        np.concatenate([leaf, rng.integers(0, 2, n_pad).astype(bool)]),
        np.concatenate([reward, rng.normal(size=n_pad) * 1e3]).astype(np.float32),
        np.concatenate([np.ones(n_valid, bool), np.zeros(n_pad, bool)]),
    )


def np_values(parent, leaf, r, valid, mode):
    n = len(parent)
    kids = {i: [j for j in range(n) if valid[j] and parent[j] == i] for i in range(n)}

    def leaves(i):
        if leaf[i]:
            return [r[i]]
        return [x for c in kids[i] for x in leaves(c)]

    def cm(i):
        if leaf[i]:
            return r[i]
        return np.mean([cm(c) for c in kids[i]]) if kids[i] else 0.0

    out = np.zeros(n)
    for i in range(n):
        if valid[i]:
            out[i] = cm(i) if mode == "child_mean" else (np.mean(leaves(i)) if leaves(i) else 0)
    return out


class TreeValuesTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_hand_values(self):
        f = self.variant(functools.partial(T.tree_values, mode="leaf_mean"))
        np.testing.assert_allclose(
            f(TRL_PARENT, TRL_LEAF, TRL_R, ALL), [0.4, 0.4, 2 / 3, 1, 0, 0, 1, 0], atol=1e-6
        )
        g = self.variant(functools.partial(T.tree_values, mode="child_mean"))
        # recursive mean: V(root) = mean(1, 0.5, 0) = 0.5, not the leaf average 0.6
        np.testing.assert_allclose(
            g(SPO_PARENT, SPO_LEAF, SPO_R, ALL), [0.5, 1, 0.5, 0, 1, 1, 0, 1], atol=1e-6
        )

    def test_random_forests_ancestor_vs_bottom_up_vs_numpy(self):
        rng = np.random.default_rng(0)
        for trial in range(6):
            # one padded size for every trial: a single compilation per function
            n_valid = 10 + 5 * trial
            parent, leaf, r, valid = random_forest(rng, n_valid, 40 - n_valid, 1 + trial % 3)
            a = jit_values(parent, leaf, r, valid, method="ancestor")
            b = jit_values(parent, leaf, r, valid)
            np.testing.assert_allclose(a, b, atol=1e-6)
            np.testing.assert_allclose(b, np_values(parent, leaf, r, valid, "leaf_mean"), atol=1e-6)
            c = jit_values(parent, leaf, r, valid, mode="child_mean")
            np.testing.assert_allclose(
                c, np_values(parent, leaf, r, valid, "child_mean"), atol=1e-6
            )
            anc = np.asarray(jax.jit(T.ancestor_matrix)(parent, valid))
            depth = np.asarray(jax.jit(T.node_depth)(parent, valid))
            np.testing.assert_array_equal(anc.sum(1)[valid], depth[valid] + 1)

    def test_batched_forests_equal_flattened(self):
        rng = np.random.default_rng(1)
        fs = [random_forest(rng, 12, 4) for _ in range(3)]
        stacked = [np.stack([f[i] for f in fs]) for i in range(4)]
        flat = T.flatten_forests(*stacked)
        vb = jit_values(*stacked, mode="child_mean")
        vf = jit_values(*flat[:4], mode="child_mean")
        np.testing.assert_allclose(np.asarray(vb).reshape(-1), vf, atol=1e-6)
        ab, _ = jit_treerl_nodes(*stacked, variant="code")
        af, _ = jit_treerl_nodes(*flat[:4], variant="code")
        np.testing.assert_allclose(np.asarray(ab).reshape(-1), af, atol=1e-6)


class TreeRLTest(chex.TestCase):
    def test_paper_and_code_tables(self):
        a, v = treerl_nodes(TRL_PARENT, TRL_LEAF, TRL_R, ALL)
        np.testing.assert_allclose(
            a, [0, 0, 0.307920, 0.933333, -0.8, -0.8, 0.933333, -1.066667], atol=1e-5
        )
        a, w = treerl_nodes(TRL_PARENT, TRL_LEAF, TRL_R, ALL, variant="code")
        np.testing.assert_allclose(w[1:], [0, 0.19245, 0.75, -0.5, -0.5, 0.75, -0.5], atol=1e-5)
        np.testing.assert_allclose(
            a, [0, 0, 0.3849, 1.3075, -1.0, -1.0, 1.3075, -1.1925], atol=1e-4
        )
        # exact: S1 = 2/(3 sqrt 3); S2 = 0.75 + 0.75 - 1/(3 sqrt 3)
        np.testing.assert_allclose(a[2], 2 / (3 * np.sqrt(3)), atol=1e-6)
        np.testing.assert_allclose(a[3], 1.5 - 1 / (3 * np.sqrt(3)), atol=1e-6)

    def test_token_advantages(self):
        tok = np.array([[1, 1, 1, 2, 2, 2, 3, 3, 3, 3, -1], [1, 1, 1, 4, 4, 4, -1, -1, -1, -1, -1]])
        mask = tok >= 0

        def run(tok, mask, variant):
            return credit.get("treerl")(
                jnp.zeros(tok.shape),
                mask,
                jnp.zeros(2, jnp.int32),
                tok_node=tok,
                parent=TRL_PARENT,
                is_leaf=TRL_LEAF,
                leaf_reward=TRL_R,
                node_valid=ALL,
                variant=variant,
            )

        adv, _ = jax.jit(functools.partial(run, variant="paper"))(tok, mask)
        np.testing.assert_allclose(adv[0, :10], [0] * 3 + [0.3079] * 3 + [0.9333] * 4, atol=1e-4)
        np.testing.assert_allclose(adv[1], [0] * 3 + [-0.8] * 3 + [0] * 5, atol=1e-5)
        adv, _ = jax.jit(functools.partial(run, variant="code"))(tok, mask)
        np.testing.assert_allclose(adv[0, :10], [0] * 3 + [0.3849] * 3 + [1.3075] * 4, atol=1e-4)

    def test_fill_in_paths_and_selection(self):
        # root -> A (leaf 1), B; B -> C; C -> {D (1), E (0)}: W(C) = W(B) so local(C) = 0 and
        # is filled from B. K = 3, S = 2: r' = (3r - 2)/2 -> 0.5, 0.5, -1.
        parent = np.array([-1, 0, 0, 2, 3, 3], np.int32)
        leaf = np.array([0, 1, 0, 0, 1, 1], bool)
        r = np.array([0, 1, 0, 0, 1, 0], np.float32)
        v = np.ones(6, bool)
        a, w = treerl_nodes(parent, leaf, r, v, variant="code")
        wb = -0.5 / np.sqrt(2) / 2  # acc(B) = -0.5, sel 2, n 2
        np.testing.assert_allclose(w, [0, 0.5, wb, wb, 0.5, -1.0], atol=1e-6)
        np.testing.assert_allclose(
            a, [0, 1.0, 2 * wb, wb + wb, 0.5 - wb + 0.5, -1 - wb - 1], atol=1e-6
        )
        # only D and A selected: sel(B) = sel(C) = 1 -> acc not divided by sqrt(2)
        sel = np.array([0, 1, 0, 0, 1, 0], bool)
        _, w2 = treerl_nodes(parent, leaf, r, v, variant="code", leaf_selected=sel)
        np.testing.assert_allclose(w2[2], -0.5 / 2, atol=1e-6)

    def test_chain_forest_equals_outcome_baseline(self):
        # a virtual root with K single-segment chains (no branching below the root)
        r = np.array([1, 0, 0, 1, 1], np.float32)
        parent = np.array([-1, 0, 0, 0, 0, 0], np.int32)
        leaf = np.array([0, 1, 1, 1, 1, 1], bool)
        rr = np.concatenate([[0.0], r]).astype(np.float32)
        v = np.ones(6, bool)
        k, mean = 5, r.mean()
        a, _ = treerl_nodes(parent, leaf, rr, v)
        np.testing.assert_allclose(a[1:], 2 * (r - mean), atol=1e-6)  # global + local
        a, _ = treerl_nodes(parent, leaf, rr, v, variant="code")
        np.testing.assert_allclose(a[1:], 2 * k / (k - 1) * (r - mean), atol=1e-6)  # 2 x RLOO
        a, _, _ = spo_nodes(parent, leaf, rr, v)
        np.testing.assert_allclose(a[1:], r - mean, atol=1e-6)  # mean-centred outcome
        a, _, _ = spo_nodes(parent, leaf, rr, v, adv_method="grpo")
        np.testing.assert_allclose(a[1:], (r - mean) / (r.std() + 1e-8), atol=1e-5)
        # deeper chains: root -> x_i -> y_i (leaf); extra chain segments add nothing
        parent2 = np.array([-1, 0, 0, 1, 2], np.int32)
        leaf2 = np.array([0, 0, 0, 1, 1], bool)
        r2 = np.array([0, 0, 0, 1, 0], np.float32)
        a, _ = treerl_nodes(parent2, leaf2, r2, np.ones(5, bool), variant="code")
        np.testing.assert_allclose(a[1:], [2, -2, 2, -2], atol=1e-6)  # fill_in_paths
        a, _, keep = spo_nodes(parent2, leaf2, r2, np.ones(5, bool))
        np.testing.assert_allclose(a[1:], [0.5, -0.5, 0, 0], atol=1e-6)
        np.testing.assert_array_equal(keep, [0, 1, 1, 0, 0])


class SPOTreeTest(chex.TestCase):
    def test_worked_example(self):
        a, v, keep = spo_nodes(SPO_PARENT, SPO_LEAF, SPO_R, ALL)
        # nodes: root, a, b, c, a1, a2, b1, b2
        np.testing.assert_allclose(a, [0, 0.5, 0, -0.5, 0, 0, -0.5, 0.5], atol=1e-6)
        np.testing.assert_array_equal(keep, [0, 1, 0, 1, 0, 0, 1, 1])
        a, _, keep = spo_nodes(SPO_PARENT, SPO_LEAF, SPO_R, ALL, adv_method="grpo")
        np.testing.assert_allclose(a, [0, 1.224745, 0, -1.224745, 0, 0, -1.0, 1.0], atol=1e-5)
        s, _ = sibling_nodes(SPO_PARENT, SPO_LEAF, SPO_R, ALL)
        np.testing.assert_allclose(s, a, atol=1e-5)

    def test_process_credit_example(self):
        # process_credit.md 4b: root -> c1 (leaves 1, 0), c2 (leaves 0, 0)
        parent = np.array([-1, 0, 0, 1, 1, 2, 2], np.int32)
        leaf = np.array([0, 0, 0, 1, 1, 1, 1], bool)
        r = np.array([0, 0, 0, 1, 0, 0, 0], np.float32)
        v = np.ones(7, bool)
        a, val, keep = spo_nodes(parent, leaf, r, v)
        np.testing.assert_allclose(val[:3], [0.25, 0.5, 0.0])
        np.testing.assert_allclose(a, [0, 0.25, -0.25, 0.5, -0.5, 0, 0], atol=1e-6)
        np.testing.assert_array_equal(keep, [0, 1, 1, 1, 1, 0, 0])
        a, _, _ = spo_nodes(parent, leaf, r, v, adv_method="grpo")
        np.testing.assert_allclose(a, [0, 1, -1, 1, -1, 0, 0], atol=1e-6)

    def test_token_level_drop_mask_and_whitening(self):
        # one row per edge: root->a, root->b (dropped, A=0), b->b1, b->b2
        tok = np.array([[1, 1, -1], [2, 2, 2], [6, 6, 6], [7, -1, -1]])
        mask = tok >= 0
        logp = np.log(np.full(tok.shape, 0.5, np.float32))
        logp[2, 0] = 0.0  # p = 1 >= 0.9: masked out by SPO's probability mask
        fn = jax.jit(credit.get("spo_tree"), static_argnames="whiten")
        kw = dict(
            tok_node=tok,
            parent=SPO_PARENT,
            is_leaf=SPO_LEAF,
            leaf_reward=SPO_R,
            node_valid=ALL,
            logp=logp,
        )
        adv, _ = fn(jnp.zeros(tok.shape), mask, jnp.zeros(4, jnp.int32), whiten=False, **kw)
        raw = np.array([[0.5, 0.5, 0], [0, 0, 0], [0, -0.5, -0.5], [0.5, 0, 0]])
        np.testing.assert_allclose(adv, raw, atol=1e-6)
        live = np.array([[1, 1, 0], [0, 0, 0], [0, 1, 1], [1, 0, 0]], bool)
        x = raw[live]
        want = np.zeros_like(raw)
        want[live] = (x - x.mean()) / np.sqrt(x.var(ddof=1) + 1e-8)
        adv, _ = fn(jnp.zeros(tok.shape), mask, jnp.zeros(4, jnp.int32), **kw)
        np.testing.assert_allclose(adv, want, atol=1e-5)


class TreeGRPOTest(chex.TestCase):
    def test_worked_example(self):
        r = np.array([1, 0, 1, 0, 0, 1], np.float32)
        tr = np.zeros((6, 4), np.float32)
        tr[:, 2] = r
        mask = np.ones((6, 4), bool)
        mask[:, 3] = False
        tr[:, 3] = 55.0  # garbage outside the mask
        fn = jax.jit(lambda tr, m, g, t: T.tree_grpo(tr, m, g, tree_ids=t))
        adv, _ = fn(tr, mask, np.zeros(6, np.int32), np.array([0, 0, 0, 1, 1, 1], np.int32))
        want = [1.4902, -2.0676, 1.4902, -1.4902, -1.4902, 2.0676]
        np.testing.assert_allclose(adv[:, 0], want, atol=1e-4)
        np.testing.assert_allclose(adv[:, 3], 0.0)
        # exact: inter = +-(1/2)/sqrt(0.3) ; intra = (1/3)/sqrt(1/3) or (2/3)/sqrt(1/3)
        np.testing.assert_allclose(
            adv[0, 0], 0.5 / np.sqrt(0.3) + 1 / 3 / np.sqrt(1 / 3), atol=1e-5
        )


class DegenerateTest(chex.TestCase):
    def test_single_leaf_and_empty_forests_give_finite_zeros(self):
        single = (
            np.array([-1, 0, 0], np.int32),
            np.array([0, 1, 0], bool),
            np.array([3.0, 1.0, 7.0], np.float32),
            np.array([1, 1, 0], bool),
        )
        empty = (
            np.full(3, -1, np.int32),
            np.ones(3, bool),
            np.ones(3, np.float32),
            np.zeros(3, bool),
        )
        for forest in (single, empty):
            for variant in ("paper", "code"):
                a, v = treerl_nodes(*forest, variant=variant)
                assert np.isfinite(a).all() and np.isfinite(v).all()
                np.testing.assert_array_equal(a, 0.0)
            for m in ("rloo", "grpo"):
                a, _, keep = spo_nodes(*forest, adv_method=m)
                np.testing.assert_array_equal(a, 0.0)
                assert not np.asarray(keep).any()
            a, _ = sibling_nodes(*forest)
            np.testing.assert_array_equal(a, 0.0)
        np.testing.assert_array_equal(jit_values(*empty), 0.0)
        adv, _ = jax.jit(T.tree_grpo)(
            np.ones((1, 3)),
            np.ones((1, 3), bool),
            np.zeros(1, np.int32),
            tree_ids=np.zeros(1, np.int32),
        )
        np.testing.assert_array_equal(adv, 0.0)

    def test_padding_garbage_does_not_matter(self):
        rng = np.random.default_rng(3)
        parent, leaf, r, valid = random_forest(rng, 15, 5)
        parent2, leaf2, r2 = parent.copy(), leaf.copy(), r.copy()
        pad = ~valid
        parent2[pad] = rng.integers(-1, len(parent), pad.sum())
        leaf2[pad] = ~leaf2[pad]
        r2[pad] = -1e6
        r2[valid & ~leaf] = 1e6  # internal nodes' rewards are never read
        for variant in ("paper", "code"):
            a1, _ = treerl_nodes(parent, leaf, r, valid, variant=variant)
            a2, _ = treerl_nodes(parent2, leaf2, r2, valid, variant=variant)
            np.testing.assert_allclose(a1, a2, atol=1e-6)
        a1, _, _ = spo_nodes(parent, leaf, r, valid)
        a2, _, _ = spo_nodes(parent2, leaf2, r2, valid)
        np.testing.assert_allclose(a1, a2, atol=1e-6)

    def test_registered_and_clear_errors(self):
        for name in ("treerl", "spo_tree", "sibling_grpo", "tree_grpo"):
            credit.get(name)
        with np.testing.assert_raises_regex(ValueError, "tok_node"):
            T.treerl(np.zeros((1, 2)), np.ones((1, 2)), np.zeros(1, np.int32))


@pytest.mark.slow
def test_estimators_jit_equals_plain():
    tok = np.array([[1, 1, 1, 2, 2, 2, 3, 3, 3, 3, -1], [1, 1, 1, 4, 4, 4, -1, -1, -1, -1, -1]])
    mask = tok >= 0
    forest = dict(
        tok_node=tok, parent=TRL_PARENT, is_leaf=TRL_LEAF, leaf_reward=TRL_R, node_valid=ALL
    )
    args = (np.zeros(tok.shape, np.float32), mask, np.zeros(2, np.int32))
    for name, opt in (
        ("treerl", dict(variant="paper")),
        ("treerl", dict(variant="code")),
        ("spo_tree", {}),
        ("sibling_grpo", {}),
    ):
        fn = credit.get(name)
        plain = fn(*args, **forest, **opt)
        jitted = jax.jit(functools.partial(fn, **opt))(*args, **forest)
        chex.assert_trees_all_close(plain, jitted, atol=1e-6)
    ids = np.array([0, 1], np.int32)
    chex.assert_trees_all_close(
        T.tree_grpo(*args, tree_ids=ids), jax.jit(T.tree_grpo)(*args, tree_ids=ids), atol=1e-6
    )
