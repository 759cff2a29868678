"""rollout.tree: forests sampled with the tiny model, against sample() and the estimators."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_reason import credit
from jaxrl_reason.credit import trees
from jaxrl_reason.rollout import SamplingConfig, left_pad, sample, strategies
from jaxrl_reason.rollout import tree as tree_mod
from jaxrl_reason.rollout.sampler import _prompt_keys
from tests.rollout.tiny import scaled_tiny_model

PROMPTS = [[1, 5, 6, 7], [1, 9], [3, 4, 5, 6, 7, 8, 9]]
R = 12


@pytest.fixture(scope="module")
def model():
    return scaled_tiny_model(layer_scale=10.0, head_scale=6.0)


class _Tok:
    pad_token_id = 0


class _StepTok(_Tok):
    """A tokenizer over the tiny model's 256 ids whose newline-holding tokens are known:
    ``id % 6 == 3`` reads ``"x\\n"`` (43 ids, about one draw in six), every other id ``"x"``."""

    def get_vocab(self):
        return {f"<{i}>": i for i in range(256)}

    def convert_tokens_to_string(self, toks):
        return "".join("x\n" if int(t[1:-1]) % 6 == 3 else "x" for t in toks)


NL = frozenset(i for i in range(256) if i % 6 == 3)


def _strategy(n, stop=(), tok=None, **tree):
    cfg = SamplingConfig(max_new_tokens=R, temperature=1.0, n=n, stop_token_ids=stop)
    settings = strategies.RolloutSettings(
        tokenizer=tok or _Tok(), task=None, sampling=cfg, options={"tree": tree}
    )
    strat = strategies.get_strategy("tree")(settings)
    strat.prompt_batch = lambda examples: left_pad([PROMPTS[i] for i in examples])
    strat.segment_ids = lambda t, lens: np.where(np.arange(t.shape[1]) < lens[:, None], 0, -1)
    return strat, cfg


EPTREE = dict(mode="eptree", num_chains=2, fork_points=2, branches=2, rounds=2)
N_EPTREE = 2 * (1 + 2 * 2 * 2)  # M (1 + L N T) = 18
SEGMENT = dict(mode="segment", segment_len=4, branching=(2, 3, 2))


# Step forks: EOS is every id % 16 == 1 (16 ids: some rows end early); id 33 is both an EOS
# and a newline token, and must end the response, not the step.
STEPS = dict(mode="segment", fork_at="steps", segment_len=4, branching=(2, 3, 2))
STEP_EOS = tuple(i for i in range(256) if i % 16 == 1)


@pytest.fixture(scope="module")
def segment_steps(model):
    strat, cfg = _strategy(12, stop=STEP_EOS, tok=_StepTok(), **STEPS)
    traj = strat.collect(model, [0, 1, 2], jax.random.key(3))
    return strat, cfg, traj.check()


@pytest.fixture(scope="module")
def eptree(model):
    strat, cfg = _strategy(N_EPTREE, **EPTREE)
    traj = strat.collect(model, [0, 1, 2], jax.random.key(1))
    return strat, cfg, traj.check()


@pytest.fixture(scope="module")
def segment(model):
    strat, cfg = _strategy(12, stop=(7,), **SEGMENT)  # a common-ish stop id: some stop early
    traj = strat.collect(model, [0, 1, 2], jax.random.key(2))
    return strat, cfg, traj.check()


def _check_forest(traj, stats):
    parent, is_leaf = np.asarray(traj.parent), np.asarray(traj.is_leaf)
    valid, leaf_row = np.asarray(traj.node_valid), np.asarray(traj.leaf_row)
    tok_node, tokens = np.asarray(traj.tok_node), np.asarray(traj.tokens)
    lengths, group = np.asarray(traj.lengths), np.asarray(traj.group_id)
    nodes = np.flatnonzero(valid)
    assert np.all(parent[nodes] < nodes)  # parents precede children
    roots = nodes[parent[nodes] < 0]
    assert len(roots) == len(PROMPTS)  # one virtual root per prompt
    depth = np.asarray(trees.node_depth(jnp.asarray(parent), jnp.asarray(valid)))
    root_of = np.asarray(trees.node_root(jnp.asarray(parent), jnp.asarray(valid)))
    seg_tokens: dict[int, list[int]] = {}
    for r in range(traj.batch_size):
        ln = int(lengths[r])
        assert np.all(tok_node[r, ln:] == -1)
        if ln == 0:
            continue
        path = [int(x) for i, x in enumerate(tok_node[r, :ln]) if i == 0 or x != tok_node[r, i - 1]]
        # consecutive segments: parent -> child; the first hangs off the prompt's root
        assert parent[path[0]] == roots[group[r]] and root_of[path[0]] == roots[group[r]]
        for a, b in zip(path[:-1], path[1:], strict=True):
            assert parent[b] == a
        assert is_leaf[path[-1]] and leaf_row[path[-1]] == r
        # the row is the concatenation of its nodes' segments (shared across rows)
        for nd in path:
            seg = tokens[r, :ln][tok_node[r, :ln] == nd].tolist()
            assert seg_tokens.setdefault(nd, seg) == seg
    assert sorted(leaf_row[leaf_row >= 0]) == sorted(np.flatnonzero(lengths > 0))
    assert np.all(leaf_row[~is_leaf] == -1)
    # budget accounting: each segment decoded once
    assert stats["decoded_tokens"] == sum(len(s) for s in seg_tokens.values())
    assert stats["leaf_tokens"] == lengths.sum()
    assert stats["leaves"] == is_leaf.sum()
    assert stats["tree_depth_max"] == depth[valid].max()
    return seg_tokens


def test_eptree_forest_structure(eptree):
    strat, _, traj = eptree
    _check_forest(traj, strat.last_stats)
    gens = strat.last_generations
    assert len(gens) == 3 * N_EPTREE  # every budgeted leaf was spent (chains long enough)
    assert strat.last_stats["decoded_tokens"] < strat.last_stats["leaf_tokens"]
    assert strat.last_stats["tree_depth_max"] >= 3  # root -> chain segment -> ... -> branch
    # each branch resamples the token at its fork point, after the highest -log p positions
    for g in gens:
        if g.parent >= 0:
            assert gens[g.parent].start < g.start < gens[g.parent].end
    assert set(np.asarray(traj.tree_id)) == {0, 1}


def test_eptree_chains_and_branches_equal_sample(model, eptree):
    strat, cfg, traj = eptree
    gens = strat.last_generations
    pk = _prompt_keys(jax.random.key(1), len(PROMPTS))
    tokens, mask = left_pad(PROMPTS)
    ref = sample(model, tokens, mask, pk, dataclasses.replace(cfg, n=2))
    for g in gens[:6]:  # the chains: sample(n=M)'s rows
        row = g.prompt * 2 + g.tree
        np.testing.assert_array_equal(g.tokens, np.asarray(ref.tokens)[row])
        np.testing.assert_allclose(g.logprobs, np.asarray(ref.logprobs)[row], atol=1e-5)
    one = dataclasses.replace(cfg, n=1)
    branches = [g for g in gens if g.parent >= 0]
    assert {g.round for g in branches} == {1, 2}
    for g in branches[:: max(1, len(branches) // 8)]:
        full, _ = tree_mod._full(gens, gens.index(g))
        prefix = PROMPTS[g.prompt] + full[: g.start]
        bk = jax.random.fold_in(
            jax.random.fold_in(pk[g.prompt], tree_mod.BRANCH_SALT + g.round), g.branch
        )
        t, m = left_pad([prefix], length=32)
        out = sample(model, t, m, bk[None], one)
        np.testing.assert_array_equal(g.tokens, np.asarray(out.tokens)[0, : len(g.tokens)])
        np.testing.assert_allclose(
            g.logprobs, np.asarray(out.logprobs)[0, : len(g.tokens)], atol=1e-4
        )


def test_segment_tree_structure(segment):
    strat, _, traj = segment
    _check_forest(traj, strat.last_stats)
    parent, valid = np.asarray(traj.parent), np.asarray(traj.node_valid)
    depth = np.asarray(trees.node_depth(jnp.asarray(parent), jnp.asarray(valid)))
    assert depth[valid].max() <= 3
    kids = np.bincount(parent[valid & (parent >= 0)], minlength=len(parent))
    for d, b in enumerate((len(PROMPTS) * 0 + 2, 3, 2)):
        # children of the nodes at depth d (d = 0: the virtual roots)
        assert kids[valid & (depth == d)].max() <= b
    assert np.all(np.asarray(traj.lengths) <= R)
    for g in strat.last_generations:
        if g.parent >= 0:  # a segment continues its parent's end
            assert g.start == strat.last_generations[g.parent].end


def test_newline_token_ids_moved_to_rollout_and_reexported_by_search():
    from jaxrl_reason import search
    from jaxrl_reason.rollout.chat import newline_token_ids

    assert search.newline_token_ids is newline_token_ids
    assert set(newline_token_ids(_StepTok())) == NL and len(NL) == 43


def test_segment_steps_forks_at_step_ends(segment_steps):
    strat, _, traj = segment_steps
    _check_forest(traj, strat.last_stats)
    gens, k, eos = strat.last_generations, STEPS["segment_len"], set(STEP_EOS)
    has_kids = {g.parent for g in gens if g.parent >= 0}
    cut_at_newline = cut_at_len = early_eos = 0
    for i, g in enumerate(gens):
        assert len(g.tokens) >= 1
        if g.parent >= 0:
            assert g.start == gens[g.parent].end
        if i in has_kids:  # an internal node: its segment ends a step or is exactly k long
            assert g.round < len(STEPS["branching"]) - 1 and g.end < R
            assert g.tokens[-1] not in eos and g.finish == 1
            assert g.tokens[-1] in NL or len(g.tokens) == k
            assert all(t not in NL for t in g.tokens[:-1])  # the step's first newline
            cut_at_newline += g.tokens[-1] in NL and len(g.tokens) < k
            cut_at_len += g.tokens[-1] not in NL
        elif g.finish == 0:  # a leaf at end of turn (a newline-EOS id included)
            assert g.tokens[-1] in eos and all(t not in eos for t in g.tokens[:-1])
            early_eos += g.round < len(STEPS["branching"]) - 1
        else:  # a leaf cut by the budget
            assert g.finish == 1 and g.end == R
    # the draws exercise every branch of the rule: short steps, cut steps, early ends
    assert cut_at_newline > 0 and cut_at_len > 0 and early_eos > 0
    # forks of one depth sit at different response positions (not the token grid)
    assert len({g.start for g in gens if g.round == 1}) > 1
    assert strat.last_stats["tree_depth_max"] == 3
    lengths, finish = np.asarray(traj.lengths), np.asarray(traj.finish_reason)
    assert np.all(lengths <= R)
    for r in np.flatnonzero(lengths > 0):  # a row's finish is its leaf's
        last = int(np.asarray(traj.tokens)[r, lengths[r] - 1])
        assert finish[r] == (0 if last in eos else 1)
        assert finish[r] == 0 or lengths[r] == R


def test_segment_steps_branches_equal_sample(model, segment_steps):
    """Each segment = ``sample`` from its prompt + prefix alone with its key schedule's key,
    stopping at newline or EOS ids (end of turn only at the last depth)."""
    strat, cfg, _ = segment_steps
    gens, k, D = strat.last_generations, STEPS["segment_len"], len(STEPS["branching"])
    pk = _prompt_keys(jax.random.key(3), len(PROMPTS))
    step_cfg = dataclasses.replace(cfg, stop_token_ids=tuple(sorted(NL | set(STEP_EOS))))
    tokens, mask = left_pad(PROMPTS)
    first = sample(model, tokens, mask, pk, dataclasses.replace(step_cfg, n=2, max_new_tokens=k))
    checked = {0: 0, 1: 0, 2: 0}
    for g in gens:
        if g.round == 0:
            ref_t = np.asarray(first.tokens)[g.prompt * 2 + g.branch]
            ref_lp = np.asarray(first.logprobs)[g.prompt * 2 + g.branch]
            ref_len = int(np.asarray(first.lengths)[g.prompt * 2 + g.branch])
        elif checked[g.round] < 6:
            full, _ = tree_mod._full(gens, g.parent)
            bk = jax.random.fold_in(
                jax.random.fold_in(pk[g.prompt], tree_mod.BRANCH_SALT + g.round), g.branch
            )
            t, m = left_pad([PROMPTS[g.prompt] + full], length=32)
            c = step_cfg if g.round < D - 1 else cfg
            out = sample(model, t, m, bk[None], dataclasses.replace(c, n=1, max_new_tokens=R))
            ref_t, ref_lp = np.asarray(out.tokens)[0], np.asarray(out.logprobs)[0]
            ref_len = int(np.asarray(out.lengths)[0])
        else:
            continue
        checked[g.round] += 1
        ln = len(g.tokens)
        np.testing.assert_array_equal(g.tokens, ref_t[:ln])
        np.testing.assert_allclose(g.logprobs, ref_lp[:ln], atol=1e-4)
        # the sampler stops at the same token unless the segment hit its length cap
        cap = min(k if g.round < D - 1 else R, R - g.start)
        assert ref_len == ln or (ln == cap and ref_len > ln)
    assert min(checked.values()) > 0


@pytest.mark.parametrize("name", ["treerl", "spo_tree", "sibling_grpo", "tree_grpo"])
def test_estimators_on_a_sampled_tree_equal_the_pure_functions(eptree, name):
    from jaxrl_reason.train import phases

    _, _, traj = eptree
    rng = np.random.default_rng(0)
    reward = rng.integers(0, 2, traj.batch_size).astype(np.float32)
    leaf_row = np.asarray(traj.leaf_row)
    leaf_reward = np.where(leaf_row >= 0, reward[np.maximum(leaf_row, 0)], 0.0)
    lengths = np.asarray(traj.lengths)
    traj = traj.replace(
        reward=reward,
        token_rewards=phases.outcome_token_rewards(reward, lengths, traj.response_width),
        leaf_reward=leaf_reward.astype(np.float32),
    )
    adv, _ = phases.make_credit_fn(name)(traj)
    adv = np.asarray(adv)
    mask = np.asarray(traj.loss_mask) > 0
    tn = np.asarray(traj.tok_node)
    forest = (traj.parent, traj.is_leaf, traj.leaf_reward, traj.node_valid)
    if name == "treerl":
        node_adv, _ = trees.treerl_node_advantages(*forest)
        expect = np.where(mask, np.asarray(node_adv)[np.maximum(tn, 0)], 0.0)
    elif name == "sibling_grpo":
        node_adv, _ = trees.sibling_node_advantages(*forest)
        expect = np.where(mask, np.asarray(node_adv)[np.maximum(tn, 0)], 0.0)
    elif name == "spo_tree":
        node_adv, _, keep = trees.spo_tree_node_advantages(*forest)
        node_adv, keep = np.asarray(node_adv), np.asarray(keep)
        live = mask & keep[np.maximum(tn, 0)] & (np.exp(np.asarray(traj.old_logprobs)) < 0.9)
        raw = np.where(live, node_adv[np.maximum(tn, 0)], 0.0)
        mu = raw[live].mean()
        var = raw[live].var(ddof=1)  # masked_whiten: unbiased variance
        expect = np.where(live, (raw - mu) / np.sqrt(var + 1e-8), 0.0)
        np.testing.assert_allclose(adv, expect, atol=1e-4)
        return
    else:  # tree_grpo: leaves of a prompt vs leaves of a tree
        tid, gid = np.asarray(traj.tree_id), np.asarray(traj.group_id)
        a = np.zeros(traj.batch_size)
        for r in range(traj.batch_size):
            g = reward[gid == gid[r]]
            t = reward[(gid == gid[r]) & (tid == tid[r])]
            a[r] = (reward[r] - g.mean()) / (g.std(ddof=1) + 1e-6) + (reward[r] - t.mean()) / (
                t.std(ddof=1) + 1e-6
            )
        expect = np.where(mask, a[:, None], 0.0)
    np.testing.assert_allclose(adv, expect, atol=1e-5)
    assert np.any(adv[mask] != 0)
    assert set(credit.inputs(name).values()) <= traj.present()


def test_tree_config_validation():
    from experiments.configs.common import base_config
    from jaxrl_reason.train.config import ConfigError, validate

    c = base_config()
    c.rollout.strategy = "tree"
    c.rollout.tree.mode = "beam"
    with pytest.raises(ConfigError, match="rollout.tree.mode"):
        validate(c)
    c.rollout.tree.mode = "segment"
    c.rollout.tree.branching = (2, 0)
    with pytest.raises(ConfigError, match="rollout.tree.branching"):
        validate(c)
    c.rollout.tree.branching = (2, 3)
    c.rollout.n_samples = 7
    c.train.mini_batch_size, c.train.micro_batch_size = 56, 8
    with pytest.raises(ConfigError, match="rollout.n_samples=7"):
        validate(c)
    c.rollout.n_samples = 6
    c.train.mini_batch_size = 48
    validate(c)
    c.rollout.tree.fork_at = "lines"
    with pytest.raises(ConfigError, match="rollout.tree.fork_at='lines': must be 'tokens'"):
        validate(c)
    c.rollout.tree.fork_at = "steps"
    validate(c)
    c.rollout.tree.mode = "eptree"
    with pytest.raises(ConfigError, match="fork_at='steps' applies to segment trees only"):
        validate(c)
