"""Search algorithms on hand-made deterministic trees (an injected expander), with values and
visit counts derived by hand."""

import math

import jax
import numpy as np
import pytest

from jaxrl_reason.data.base import Example
from jaxrl_reason.search import (
    Child,
    arith_chain_oracle_scorer,
    beam_search,
    best_of_n,
    mcts,
    uct_scores,
    weighted_vote,
)

KEY = jax.random.key(0)


class TreeExpander:
    """A toy deterministic "policy": ``tree[text] = [(step_text, finished), ...]``; the
    ``k`` continuations of a node are its first ``k`` children (cycled); ``to_end`` follows
    first children to a finished node. A step costs one token per character."""

    def __init__(self, tree):
        self.tree = tree
        self.calls = []

    def roots(self, problems):
        return ["" for _ in problems]

    def _step(self, h, j):
        kids = self.tree[h]
        text, fin = kids[j % len(kids)]
        return text, fin

    def expand(self, handles, k, key, *, to_end=False):
        flags = [to_end] * len(handles) if isinstance(to_end, bool) else list(to_end)
        self.calls.append((list(handles), k, flags))
        out = []
        for h, end in zip(handles, flags, strict=True):
            kids = []
            for j in range(k):
                text, fin = self._step(h, j)
                full = text
                while end and not fin:
                    t2, fin = self._step(h + full, 0)
                    full += t2
                kids.append(Child(full, len(full), fin, h + full))
            out.append(kids)
        return out


def table_scorer(values):
    return lambda problems, texts: np.asarray([values[t] for t in texts], np.float32)


# --------------------------------------------------------------------------------------------
# best-of-N and voting


def test_best_of_n_picks_the_scorers_argmax_per_problem():
    tree = {"": [("x", True), ("yy", True), ("zzz", True), ("w", True)]}
    values = {"x": 0.1, "yy": 0.7, "zzz": 0.3, "w": 0.7}
    exp = TreeExpander(tree)
    res = best_of_n(exp, table_scorer(values), ["p0", "p1"], KEY, n=4)
    assert res.texts == ["yy", "yy"]  # ties (yy, w at 0.7) go to the first sample
    np.testing.assert_allclose(res.scores, [0.7, 0.7])
    assert res.tokens_generated == 2 * (1 + 2 + 3 + 1)
    assert res.tokens_per_problem.tolist() == [7, 7]
    assert exp.calls == [(["", ""], 4, [True, True])]  # one batched call, to the end


def test_weighted_vote_matches_the_worked_example():
    """prm_search_selftraining.md §4: 5 candidates A..E with answers 12, 12, 7, 7, 7."""
    answers = ["12", "12", "7", "7", "7"]
    last = [0.7, 0.9, 0.65, 0.6, 0.55]
    win, totals = weighted_vote(answers, last)
    assert win == "7"
    assert totals == pytest.approx({"12": 1.6, "7": 1.8})
    minimum = [0.7, 0.3, 0.6, 0.6, 0.55]
    assert weighted_vote(answers, minimum)[1] == pytest.approx({"12": 1.0, "7": 1.75})
    assert weighted_vote(answers)[0] == "7"
    # a large score on one sample beats a majority of small ones
    assert weighted_vote(["1", "2", "2"], [0.9, 0.4, 0.4])[0] == "1"
    # None (no answer) never wins over a real answer
    assert weighted_vote([None, None, "3"], [1.0, 1.0, 0.1])[0] == "3"


def test_best_of_n_weighted_vote_returns_the_winning_answers_best_sample():
    tree = {"": [("a=12", True), ("b=12", True), ("c=7", True), ("d=7", True), ("e=7", True)]}
    values = {"a=12": 0.7, "b=12": 0.9, "c=7": 0.65, "d=7": 0.6, "e=7": 0.55}
    exp = TreeExpander(tree)
    ans = lambda t: t.split("=")[1]
    bon = best_of_n(exp, table_scorer(values), ["p"], KEY, n=5)
    assert bon.texts == ["b=12"]
    vote = best_of_n(exp, table_scorer(values), ["p"], KEY, n=5, vote="weighted", answer_fn=ans)
    assert vote.texts == ["c=7"] and vote.scores[0] == pytest.approx(0.65)


# --------------------------------------------------------------------------------------------
# beam search with the arith_chain oracle


def _arith_problem():
    # 3 + 4 = 7, then 7 - 2 = 5.
    return Example("t", "Start with 3. Add 4, then subtract 2.", "5", {"steps": [7, 5]})


# The toy policy prefers wrong steps: its first child is always the wrong one, so following the
# model (greedy = first child) gives 8, 6.
ARITH_TREE = {
    "": [("3 + 4 = 8\n", False), ("3 + 4 = 7\n", False)],
    "3 + 4 = 8\n": [("8 - 2 = 6\n#### 6", True), ("8 - 2 = 5\n#### 5", True)],
    "3 + 4 = 7\n": [("7 - 2 = 6\n#### 6", True), ("7 - 2 = 5\n#### 5", True)],
}


def test_oracle_scorer_on_partial_paths():
    score = arith_chain_oracle_scorer("fraction")
    ex = _arith_problem()
    texts = [
        "",
        "3 + 4 = 7\n",
        "3 + 4 = 8\n",
        "3 + 4 = 7\n7 - 2 = 6\n",
        "3 + 4 = 7\n7 - 2 = 5\n#### 5",
        "3 + 4 = 8\n8 - 2 = 5\n#### 5",
        "3 + 4 = 7\n7 - 2 = 5\n#### 6",
    ]
    np.testing.assert_allclose(score([ex] * 7, texts), [0.5, 1.0, 0.0, 0.5, 1.0, 0.5, 0.0])
    np.testing.assert_allclose(
        arith_chain_oracle_scorer("all")([ex] * 4, texts[:4]), [0.5, 1.0, 0.0, 0.0]
    )


def test_beam_search_with_the_oracle_finds_the_known_best_path():
    ex = _arith_problem()
    exp = TreeExpander(ARITH_TREE)
    res = beam_search(
        exp, arith_chain_oracle_scorer(), [ex], KEY, beam_width=1, expansions=2, max_depth=2
    )
    assert res.texts == ["3 + 4 = 7\n7 - 2 = 5\n#### 5"]
    assert res.scores[0] == 1.0
    # round 0: the root expanded into B*K = 2 first steps; round 1: the kept beam into K = 2,
    # run to the end; nothing else was decoded.
    assert [c[:2] for c in exp.calls] == [([""], 2), (["3 + 4 = 7\n"], 2)]
    assert exp.calls[1][2] == [True]
    n_tok = len("3 + 4 = 8\n") * 2 + len("7 - 2 = 6\n#### 6") * 2
    assert res.tokens_generated == n_tok
    # The model's own greedy path is wrong: beam search beat it with the oracle.
    greedy = best_of_n(exp, arith_chain_oracle_scorer(), [ex], KEY, n=1)
    assert greedy.texts == ["3 + 4 = 8\n8 - 2 = 6\n#### 6"] and greedy.scores[0] == 0.0


def test_beam_search_completed_beams_leave_the_active_set():
    """B = 2: round 0 expands the root into 4 steps; one finishes (score .9) and takes a slot,
    so only the best unfinished one (.6) survives, expanded by K = 2 to the end."""
    tree = {
        "": [("a", False), ("b", True), ("c", False), ("d", False)],
        "a": [("1", True), ("2", True)],
        "c": [("1", True), ("2", True)],
    }
    values = {"a": 0.6, "b": 0.9, "c": 0.2, "d": 0.5, "a1": 0.95, "a2": 0.1}
    exp = TreeExpander(tree)
    res = beam_search(
        exp, table_scorer(values), ["p"], KEY, beam_width=2, expansions=2, max_depth=3
    )
    assert [c[:2] for c in exp.calls] == [([""], 4), (["a"], 2)]
    done = res.info["completed"][0]
    assert [t for t, _ in done] == ["b", "a1", "a2"]
    np.testing.assert_allclose([s for _, s in done], [0.9, 0.95, 0.1], rtol=1e-6)
    assert res.texts == ["a1"]


# --------------------------------------------------------------------------------------------
# MCTS


def test_uct_matches_the_worked_numbers():
    """trees_agents.md §6.2: c = 0.7, N(parent) = 4."""
    u = uct_scores([0.8, 0.4, 0.3], [2, 1, 0], 4, 0.7, 1.0)
    np.testing.assert_allclose(u, [1.6242, 1.5656, 1.3], atol=1e-4)


MCTS_TREE = {
    "": [("a", False), ("b", False)],
    "a": [("a", True), ("b", True)],
    "b": [("a", True), ("b", False)],
}
MCTS_VALUES = {"a": 0.6, "b": 0.4, "aa": 0.2, "ab": 0.9, "ba": 0.5, "bb": 0.7}


def test_mcts_visits_and_values_by_hand():
    """c = 0.7, inf = 1, K = 2, no rollout. By hand:

    sim 1: expand root -> a (.6), b (.4); a (best) N=1; root N=1, V=.6.
    sim 2: UCT a = .6 + .7 sqrt(2 ln 1 / 1) = .6, b = .4 + inf = 1.4 -> b; expand b ->
           ba (.5, finished), bb (.7); bb N=1; b N=1, V=.7; root N=2, V=(.6+.7)/2=.65.
    sim 3: a = .6 + .7 sqrt(2 ln 2) = 1.4242, b = .7 + 1.1774*.7 = 1.5242 -> b; in b:
           ba = .5 + 1 = 1.5 > bb = .7 + 0 -> ba, finished: backed up: ba N=1,
           b N=2, V=(.5+.7)/2=.6; root N=3, V=(.6*1+.6*2)/3=.6.
    sim 4: a = .6 + .7 sqrt(2 ln 3) = 1.6376, b = .6 + .7 sqrt(ln 3) = 1.3337 -> a; expand a
           -> aa (.2, finished), ab (.9, finished); ab N=1; a N=2, V=.9;
           root N=4, V=(.9*2 + .6*2)/4 = .75.
    Answer: the best finished response, ab (.9).
    """
    exp = TreeExpander(MCTS_TREE)
    res = mcts(exp, table_scorer(MCTS_VALUES), ["p"], KEY, simulations=4, expansions=2, max_depth=3)
    nodes = {nd.text: nd for nd in res.info["trees"][0]}
    visits = {t: nd.visits for t, nd in nodes.items()}
    assert visits == {"": 4, "a": 2, "b": 2, "aa": 0, "ab": 1, "ba": 1, "bb": 1}
    assert nodes[""].value == pytest.approx(0.75)
    assert nodes["a"].value == pytest.approx(0.9)
    assert nodes["b"].value == pytest.approx(0.6)
    assert nodes["ba"].value == pytest.approx(0.5) and nodes["bb"].value == pytest.approx(0.7)
    assert res.texts == ["ab"] and res.scores[0] == pytest.approx(0.9)
    # three expansions (sim 3 expanded nothing), each of K = 2 one-token steps
    assert [c[0] for c in exp.calls] == [[""], ["b"], ["a"]]
    assert res.tokens_generated == 6
    assert 0.6 + 0.7 * math.sqrt(2 * math.log(3)) == pytest.approx(1.63761, abs=1e-5)


def test_mcts_rollout_mixes_the_rollout_max_into_the_value():
    """One simulation with a 1-step greedy rollout (alpha = .5) from the best new child a:
    its continuations a (aa, .2) and b (ab, .9) -> the rollout keeps ab: max_V = max(.6, .9);
    V(a) = .5*.6 + .5*.9 = .75; root V = .75. The rollout's finished end is the answer."""
    exp = TreeExpander(MCTS_TREE)
    res = mcts(
        exp,
        table_scorer(MCTS_VALUES),
        ["p"],
        KEY,
        simulations=1,
        expansions=2,
        max_depth=3,
        rollout_steps=1,
        rollout_branch=2,
    )
    nodes = {nd.text: nd for nd in res.info["trees"][0]}
    assert nodes["a"].value == pytest.approx(0.75) and nodes["a"].visits == 1
    assert nodes[""].value == pytest.approx(0.75) and nodes[""].visits == 1
    assert res.texts == ["ab"]
    assert res.tokens_generated == 4


def test_mcts_is_batched_over_problems():
    exp = TreeExpander(MCTS_TREE)
    res = mcts(
        exp, table_scorer(MCTS_VALUES), ["p", "q"], KEY, simulations=4, expansions=2, max_depth=3
    )
    assert [c[0] for c in exp.calls] == [["", ""], ["b", "b"], ["a", "a"]]
    assert res.texts == ["ab", "ab"] and res.tokens_per_problem.tolist() == [6, 6]
