"""Inference-time search over reasoning steps: best-of-N, weighted majority vote, step-level
beam search and MCTS, batched over problems.

Every search talks to the policy through an :class:`Expander` (continue a set of partial
responses by one step, or to the end) and to a verifier / reward model through a
:data:`ScoreFn` (``(problems, partial_texts) -> float32[N]``). The expander is injectable, so
the search logic is tested on hand-made deterministic trees, and the real one
(:class:`jaxrl_reason.search.SessionExpander`) decodes on :mod:`jaxrl_reason.rollout.session`
KV caches: the prompt is prefilled once and every step continues from its parent's cache rows,
so a shared prefix is never decoded (or prefilled) twice.

Each search returns a :class:`SearchResult` whose ``tokens_generated`` counts every token the
expander drew (pruned branches and MCTS rollouts included): the x-axis of an
accuracy-versus-compute plot.

Formulas (copied from the sources; Snell et al. 2024, arXiv 2408.03314, §5 and App. C/G;
ReST-MCTS*, Zhang et al. 2024, arXiv 2406.03816, code ``MCTS/mcts.py`` at 2d5f488):

* best-of-N: ``argmax_b S[b]`` over N complete samples (first index on ties);
* weighted majority: ``W[a] = sum_b S[b] 1[ans_b = a]``, pick ``argmax_a W[a]`` (ties: the
  answer seen first), then that answer's best-scoring sample; plain majority is ``S = 1``;
* beam search: the root is expanded into ``B * K`` first steps; each round scores every
  candidate prefix, moves finished ones to the completed pool and keeps the top
  ``B - |completed|`` unfinished ones, each expanded by ``K`` steps; the last round runs to
  the end; the answer is the best-scoring completed response;
* MCTS*: selection by ``UCT(c) = V(c) + c_uct sqrt(2 ln N(parent) / N(c))`` (``V(c) + inf``
  for ``N(c) = 0``); expansion by ``K`` sampled steps, each valued by the scorer; simulation
  from the best new child (``rollout_steps`` greedy steps of ``rollout_branch`` candidates,
  ``V <- (1 - alpha) V + alpha max_V``, ``N += 1``); backup to the root: ``N += 1`` and
  ``V = sum_c V(c) N(c) / sum_c N(c)`` at expanded nodes. Defaults ``c_uct = 0.7``,
  ``alpha = 0.5``, ``inf = 1.0``, ``K = 3`` are ReST-MCTS*'s. Worked numbers (c = 0.7,
  N(parent) = 4): children ``(V, N) = (0.8, 2), (0.4, 1), (0.3, 0)`` score UCT 1.6242,
  1.5656, 1.3; the backup of the first two gives ``V = (0.8*2 + 0.4*1) / 3 = 0.6667``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Hashable, Sequence
from typing import Any, Protocol

import jax
import numpy as np

__all__ = [
    "Child",
    "Expander",
    "MCTSNode",
    "ScoreFn",
    "SearchResult",
    "beam_search",
    "best_of_n",
    "mcts",
    "uct_scores",
    "weighted_vote",
]

#: ``(problems, partial_texts) -> float32[N]``: ``problems[i]`` is the problem (a task
#: ``Example``) of ``partial_texts[i]``; higher is better. An outcome verifier, a PRM
#: aggregated over the prefix's steps, or :func:`arith_chain_oracle_scorer`.
ScoreFn = Callable[[Sequence[Any], Sequence[str]], np.ndarray]


@dataclasses.dataclass(frozen=True)
class Child:
    """One continuation drawn by an :class:`Expander`.

    Attributes:
      text: the new text only (appended to the parent's text by the search).
      num_tokens: tokens the policy drew for it (counted in ``tokens_generated``).
      finished: True when the response ended (end-of-turn token, token budget or depth
        limit); a finished node is never expanded.
      handle: the expander's state to continue from (opaque to the search).
    """

    text: str
    num_tokens: int
    finished: bool
    handle: Any


class Expander(Protocol):
    """The policy side of a search (see :class:`jaxrl_reason.search.SessionExpander`)."""

    def roots(self, problems: Sequence[Any]) -> list[Any]:
        """One handle per problem: the empty response after its prompt."""
        ...

    def expand(
        self,
        handles: Sequence[Any],
        k: int,
        key: jax.Array,
        *,
        to_end: bool | Sequence[bool] = False,
    ) -> list[list[Child]]:
        """``k`` sampled continuations of each handle: one step (up to a step boundary or the
        end of the response), or the whole rest of the response where ``to_end`` (one flag,
        or one per handle) is True."""
        ...


@dataclasses.dataclass
class SearchResult:
    """What a search returns.

    Attributes:
      texts: the chosen response of each problem (``P`` strings).
      scores: ``float32[P]`` the scorer's score of each chosen response.
      tokens_generated: tokens the expander drew over all problems (every branch).
      tokens_per_problem: ``int64[P]`` the same per problem.
      info: search-specific extras (candidates, trees) for tests and analysis.
    """

    texts: list[str]
    scores: np.ndarray
    tokens_generated: int
    tokens_per_problem: np.ndarray
    info: dict[str, Any] = dataclasses.field(default_factory=dict)


def _score(score_fn: ScoreFn, problems: Sequence[Any], texts: Sequence[str]) -> np.ndarray:
    if not texts:
        return np.zeros((0,), np.float32)
    s = np.asarray(score_fn(list(problems), list(texts)), np.float32).reshape(-1)
    if s.shape[0] != len(texts):
        raise ValueError(f"search: the scorer returned {s.shape[0]} scores for {len(texts)} texts")
    return s


def weighted_vote(
    answers: Sequence[Hashable], weights: Sequence[float] | None = None
) -> tuple[Hashable, dict]:
    """Weighted majority vote (Snell et al. 2024, App. G: "best-of-N weighted").

    ``W[a] = sum_b weights[b] 1[answers[b] = a]`` (``weights = 1``: plain majority); returns
    ``(argmax_a W[a], W)`` with ties going to the answer seen first. ``None`` answers (no
    extractable answer) never win unless every answer is None.
    """
    w = np.ones(len(answers)) if weights is None else np.asarray(weights, np.float64)
    totals: dict = {}
    for a, x in zip(answers, w, strict=True):
        totals[a] = totals.get(a, 0.0) + float(x)
    cands = [a for a in totals if a is not None] or list(totals)
    best = cands[0]
    for a in cands[1:]:
        if totals[a] > totals[best]:
            best = a
    return best, totals


def _pick(
    texts: list[str],
    scores: np.ndarray,
    vote: str | None,
    answer_fn: Callable[[str], Hashable] | None,
) -> int:
    """Index of the chosen candidate: best score, or the best-scoring member of the winning
    answer of a (weighted) vote."""
    if not texts:
        return -1
    if vote is None:
        return int(np.argmax(scores))
    if answer_fn is None:
        raise ValueError(f"search: vote={vote!r} needs an answer_fn")
    answers = [answer_fn(t) for t in texts]
    weights = scores if vote == "weighted" else None
    if vote not in ("weighted", "majority"):
        raise ValueError(f"search: vote={vote!r}; use None, 'weighted' or 'majority'")
    win, _ = weighted_vote(answers, weights)
    members = [i for i, a in enumerate(answers) if a == win]
    return max(members, key=lambda i: (scores[i], -i))


# --------------------------------------------------------------------------------------------
# Best-of-N.


def best_of_n(
    expander: Expander,
    score_fn: ScoreFn,
    problems: Sequence[Any],
    key: jax.Array,
    *,
    n: int,
    vote: str | None = None,
    answer_fn: Callable[[str], Hashable] | None = None,
) -> SearchResult:
    """Best-of-N (and weighted / plain majority vote) over ``n`` complete samples per problem.

    Args:
      expander: draws the samples (``expand(roots, n, key, to_end=True)``).
      score_fn: scores complete responses (outcome reward model, PRM, oracle).
      problems: ``P`` task examples.
      key: PRNG key of the call.
      n: samples per problem.
      vote: None (best-of-N: ``argmax`` score), ``"weighted"`` (``W[a] = sum S[b]``) or
        ``"majority"``; votes need ``answer_fn`` (response text -> canonical answer).

    Returns:
      :class:`SearchResult`; ``info["candidates"]`` = per problem ``[(text, score), ...]``.
    """
    if n < 1:
        raise ValueError(f"best_of_n: n={n} must be >= 1")
    kids = expander.expand(expander.roots(problems), n, key, to_end=True)
    flat_p = [p for p, ks in zip(problems, kids, strict=True) for _ in ks]
    flat_t = [c.text for ks in kids for c in ks]
    scores = _score(score_fn, flat_p, flat_t)
    texts, chosen, cands, toks = [], [], [], []
    pos = 0
    for ks in kids:
        t = flat_t[pos : pos + len(ks)]
        s = scores[pos : pos + len(ks)]
        pos += len(ks)
        i = _pick(t, s, vote, answer_fn)
        texts.append(t[i] if i >= 0 else "")
        chosen.append(float(s[i]) if i >= 0 else 0.0)
        cands.append(list(zip(t, s.tolist(), strict=True)))
        toks.append(sum(c.num_tokens for c in ks))
    toks = np.asarray(toks, np.int64)
    return SearchResult(
        texts, np.asarray(chosen, np.float32), int(toks.sum()), toks, {"candidates": cands}
    )


# --------------------------------------------------------------------------------------------
# Step-level beam search.


@dataclasses.dataclass
class _Beam:
    text: str
    handle: Any
    score: float = 0.0


def beam_search(
    expander: Expander,
    score_fn: ScoreFn,
    problems: Sequence[Any],
    key: jax.Array,
    *,
    beam_width: int,
    expansions: int,
    max_depth: int,
    vote: str | None = None,
    answer_fn: Callable[[str], Hashable] | None = None,
) -> SearchResult:
    """Step-level beam search guided by a step scorer (Snell et al. 2024, App. C).

    Round 0 expands each problem's root into ``beam_width * expansions`` first steps; every
    round scores each candidate prefix (``score_fn`` on the whole partial response), moves the
    finished candidates to the completed pool and keeps the ``beam_width - |completed|``
    best unfinished ones (stable: earlier candidates win ties), each expanded by
    ``expansions`` steps in the next round. Round ``max_depth - 1`` continues the survivors to
    the end of the response. The answer is the best-scoring completed response (or the
    ``vote`` over the completed pool, as :func:`best_of_n`). All problems' beams are expanded
    in one batched call per round.

    Args:
      expander, score_fn, problems, key: as :func:`best_of_n`.
      beam_width: ``B``, responses kept (active beams plus completed ones).
      expansions: ``K``, sampled next steps per active beam.
      max_depth: rounds (steps) before the survivors are completed in one go (>= 1).

    Returns:
      :class:`SearchResult`; ``info["completed"]`` = per problem ``[(text, score), ...]``.
    """
    if beam_width < 1 or expansions < 1 or max_depth < 1:
        raise ValueError(
            f"beam_search: beam_width={beam_width}, expansions={expansions}, "
            f"max_depth={max_depth} must all be >= 1"
        )
    num = len(problems)
    active: list[list[_Beam]] = [[_Beam("", h)] for h in expander.roots(problems)]
    completed: list[list[tuple[str, float]]] = [[] for _ in range(num)]
    toks = np.zeros(num, np.int64)
    for depth in range(max_depth):
        owners = [p for p in range(num) for _ in active[p]]
        if not owners:
            break
        beams = [b for p in range(num) for b in active[p]]
        k = beam_width * expansions if depth == 0 else expansions
        kids = expander.expand(
            [b.handle for b in beams],
            k,
            jax.random.fold_in(key, depth),
            to_end=depth == max_depth - 1,
        )
        cand_p, cand = [], []
        for p, b, ks in zip(owners, beams, kids, strict=True):
            for c in ks:
                toks[p] += c.num_tokens
                cand_p.append(p)
                cand.append((b.text + c.text, c))
        scores = _score(score_fn, [problems[p] for p in cand_p], [t for t, _ in cand])
        nxt: list[list[_Beam]] = [[] for _ in range(num)]
        for p, (t, c), s in zip(cand_p, cand, scores, strict=True):
            if c.finished:
                completed[p].append((t, float(s)))
            else:
                nxt[p].append(_Beam(t, c.handle, float(s)))
        for p in range(num):
            room = beam_width - len(completed[p])
            order = sorted(range(len(nxt[p])), key=lambda i, p=p: -nxt[p][i].score)
            active[p] = [nxt[p][i] for i in order[: max(room, 0)]]
    texts, chosen = [], []
    for p in range(num):
        pool = completed[p] or [(b.text, b.score) for b in active[p]]
        i = _pick([t for t, _ in pool], np.asarray([s for _, s in pool]), vote, answer_fn)
        texts.append(pool[i][0] if i >= 0 else "")
        chosen.append(pool[i][1] if i >= 0 else 0.0)
    return SearchResult(
        texts, np.asarray(chosen, np.float32), int(toks.sum()), toks, {"completed": completed}
    )


# --------------------------------------------------------------------------------------------
# MCTS over steps (ReST-MCTS*'s MCTS*).


@dataclasses.dataclass
class MCTSNode:
    """One partial response of a problem's search tree.

    ``value`` is ``V`` (the scorer's value at expansion, then the backed-up visit-weighted
    mean of the children), ``visits`` is ``N``; ``children`` index the problem's node list.
    """

    text: str
    handle: Any
    parent: int
    depth: int
    value: float = 0.0
    visits: int = 0
    finished: bool = False
    expanded: bool = False
    children: list[int] = dataclasses.field(default_factory=list)


def uct_scores(
    values: np.ndarray, visits: np.ndarray, parent_visits: int, c_uct: float, inf: float
) -> np.ndarray:
    """``UCT = V + c_uct sqrt(2 ln N_parent / N)``, ``V + inf`` where ``N = 0`` (MCTS*).

    ``values float[C]``, ``visits int[C]`` of a node's children -> ``float64[C]``.
    """
    v = np.asarray(values, np.float64)
    n = np.asarray(visits, np.float64)
    ln = math.log(parent_visits) if parent_visits > 0 else 0.0
    bonus = c_uct * np.sqrt(2.0 * ln / np.maximum(n, 1.0))
    return np.where(n > 0, v + bonus, v + inf)


def _backup(nodes: list[MCTSNode], i: int) -> None:
    """``N += 1`` from node ``i`` to the root; expanded nodes take the visit-weighted mean of
    their children's values."""
    while i >= 0:
        nd = nodes[i]
        nd.visits += 1
        if nd.expanded and nd.children:
            n = np.asarray([nodes[c].visits for c in nd.children], np.float64)
            if n.sum() > 0:
                v = np.asarray([nodes[c].value for c in nd.children], np.float64)
                nd.value = float((v * n).sum() / n.sum())
        i = nd.parent


def mcts(
    expander: Expander,
    score_fn: ScoreFn,
    problems: Sequence[Any],
    key: jax.Array,
    *,
    simulations: int,
    expansions: int = 3,
    max_depth: int = 8,
    c_uct: float = 0.7,
    inf: float = 1.0,
    alpha: float = 0.5,
    rollout_steps: int = 0,
    rollout_branch: int = 1,
    end_gate: float | None = None,
) -> SearchResult:
    """MCTS over reasoning steps (ReST-MCTS*'s MCTS*; module docstring for the formulas).

    Each simulation, for every problem still searching (one batched expansion for all):

    1. selection: from the root, while the node is expanded, go to the child with the highest
       :func:`uct_scores` (first child on ties);
    2. a selected node that is finished or at ``max_depth`` is terminal: it is backed up again
       (its ``N`` grows, its ``V`` is kept); with ``end_gate``, a terminal node with
       ``V >= end_gate`` ends that problem's search. Otherwise it is expanded into
       ``expansions`` children, each with ``V = score_fn(partial response)`` and ``N = 0``
       (a child at ``max_depth`` is continued to the end of the response);
    3. simulation: the new child with the highest ``V`` (what UCT picks among unvisited
       children) is rolled forward ``rollout_steps`` steps, keeping the best of
       ``rollout_branch`` candidates per step; ``V <- (1 - alpha) V + alpha max_V`` over the
       rollout's scores; its ``N`` becomes 1. With ``rollout_steps = 0`` it keeps its value;
    4. backup from the expanded node to the root (:func:`_backup`).

    The answer is the best-scoring finished response met (tree nodes and rollout ends); a
    problem with none is completed from the most visited path with one sample.

    Returns:
      :class:`SearchResult`; ``info["trees"]`` = per problem its ``list[MCTSNode]`` (node 0 is
      the root).
    """
    if simulations < 1 or expansions < 1 or max_depth < 1:
        raise ValueError(
            f"mcts: simulations={simulations}, expansions={expansions}, max_depth={max_depth} "
            "must all be >= 1"
        )
    num = len(problems)
    trees = [[MCTSNode("", h, -1, 0)] for h in expander.roots(problems)]
    finished: list[list[tuple[str, float]]] = [[] for _ in range(num)]
    done = [False] * num
    toks = np.zeros(num, np.int64)
    calls = 0

    def call(handles, k, to_end):
        nonlocal calls
        calls += 1
        return expander.expand(handles, k, jax.random.fold_in(key, calls), to_end=to_end)

    for _ in range(simulations):
        leaves: list[tuple[int, int]] = []
        for p in range(num):
            if done[p]:
                continue
            nodes, i = trees[p], 0
            while nodes[i].expanded and nodes[i].children:
                nd = nodes[i]
                kids = nd.children
                u = uct_scores(
                    [nodes[c].value for c in kids],
                    [nodes[c].visits for c in kids],
                    nd.visits,
                    c_uct,
                    inf,
                )
                i = kids[int(np.argmax(u))]
            nd = nodes[i]
            if nd.finished or nd.depth >= max_depth:
                if end_gate is not None and nd.value >= end_gate:
                    done[p] = True
                _backup(nodes, i)
            else:
                leaves.append((p, i))
        if not leaves:
            if all(done):
                break
            continue
        kids = call(
            [trees[p][i].handle for p, i in leaves],
            expansions,
            [trees[p][i].depth + 1 >= max_depth for p, i in leaves],
        )
        new_p, new_t = [], []
        for (p, i), ks in zip(leaves, kids, strict=True):
            par = trees[p][i]
            for c in ks:
                toks[p] += c.num_tokens
                new_p.append(p)
                new_t.append(par.text + c.text)
        scores = _score(score_fn, [problems[p] for p in new_p], new_t)
        pos = 0
        best: list[tuple[int, int]] = []
        for (p, i), ks in zip(leaves, kids, strict=True):
            nodes = trees[p]
            par = nodes[i]
            par.expanded = True
            for c, s in zip(ks, scores[pos : pos + len(ks)], strict=True):
                nodes.append(
                    MCTSNode(par.text + c.text, c.handle, i, par.depth + 1, float(s), 0, c.finished)
                )
                par.children.append(len(nodes) - 1)
                if c.finished:
                    finished[p].append((par.text + c.text, float(s)))
            pos += len(ks)
            if par.children:
                best.append((p, max(par.children, key=lambda j, n=nodes: (n[j].value, -j))))
        # Simulation from each best new child, all problems batched per rollout step.
        max_v = {pc: trees[pc[0]][pc[1]].value for pc in best}
        cur = {pc: (trees[pc[0]][pc[1]].text, trees[pc[0]][pc[1]].handle) for pc in best}
        live = [pc for pc in best if not trees[pc[0]][pc[1]].finished]
        for r in range(rollout_steps):
            if not live:
                break
            depth_of = {pc: trees[pc[0]][pc[1]].depth + r + 1 for pc in live}
            ks_all = call(
                [cur[pc][1] for pc in live],
                rollout_branch,
                [depth_of[pc] >= max_depth for pc in live],
            )
            rp, rt = [], []
            for pc, ks in zip(live, ks_all, strict=True):
                for c in ks:
                    toks[pc[0]] += c.num_tokens
                    rp.append(problems[pc[0]])
                    rt.append(cur[pc][0] + c.text)
            rs = _score(score_fn, rp, rt)
            pos, still = 0, []
            for pc, ks in zip(live, ks_all, strict=True):
                j = pos + int(np.argmax(rs[pos : pos + len(ks)]))
                c = ks[j - pos]
                pos += len(ks)
                max_v[pc] = max(max_v[pc], float(rs[j]))
                cur[pc] = (rt[j], c.handle)
                if c.finished:
                    finished[pc[0]].append((rt[j], float(rs[j])))
                elif depth_of[pc] < max_depth:
                    still.append(pc)
            live = still
        for p, j in best:
            nd = trees[p][j]
            if rollout_steps > 0 and not nd.finished:
                nd.value = (1.0 - alpha) * nd.value + alpha * max_v[(p, j)]
            _backup(trees[p], j)
    # The answers.
    texts, chosen = [""] * num, [0.0] * num
    fallback = []
    for p in range(num):
        if finished[p]:
            t, s = max(finished[p], key=lambda ts: ts[1])
            texts[p], chosen[p] = t, s
            continue
        nodes, i = trees[p], 0
        while nodes[i].children:
            i = max(nodes[i].children, key=lambda j, n=nodes: (n[j].visits, n[j].value))
        fallback.append((p, i))
    if fallback:
        kids = call([trees[p][i].handle for p, i in fallback], 1, True)
        ft = []
        for (p, i), ks in zip(fallback, kids, strict=True):
            toks[p] += sum(c.num_tokens for c in ks)
            ft.append(trees[p][i].text + (ks[0].text if ks else ""))
        fs = _score(score_fn, [problems[p] for p, _ in fallback], ft)
        for (p, _), t, s in zip(fallback, ft, fs, strict=True):
            texts[p], chosen[p] = t, float(s)
    return SearchResult(
        texts,
        np.asarray(chosen, np.float32),
        int(toks.sum()),
        toks,
        {"trees": trees, "finished": finished},
    )
