"""Tree rollouts: responses that share prefixes, decoded once with :mod:`rollout.session`.

Registered as ``rollout.strategy = "tree"``; the shape lives in ``config.rollout.tree``
(:class:`TreeConfig`). Two branching rules:

* ``mode = "eptree"``: EPTree (TreeRL, Hou et al. 2025, arXiv 2506.11902). ``M`` root
  chains per prompt are sampled to the end; then, for ``rounds`` iterations, each tree (a
  chain and its branches) picks its ``fork_points`` tokens with the highest fork score
  ``H = -log p`` of the sampled token (the sampler's own behaviour log-prob, as in TreeRL's
  code; no extra forward), and ``branches`` new continuations are sampled from each, the
  token at the fork point re-sampled. Position 0 of a generation is never a fork point.
  TreeRL's released shape ``(M, N, L, T) = (6, 2, 1, 2)`` gives ``6 * (1 + 1*2*2) = 30``
  leaves per prompt.
* ``mode = "segment"``: segment trees (SPO-tree, Guo et al. 2025, arXiv 2506.03065; TreePO,
  arXiv 2508.17445): every unfinished row is forked into ``branching[d]`` children at the end
  of its depth-``d`` segment; the last depth runs to the end of the response. A row that
  stops early (end of turn, or the ``max_new_tokens`` budget) is a leaf. Where a segment
  ends is ``fork_at``:

  - ``"tokens"``: every ``segment_len`` tokens (forks after ``segment_len * d`` tokens).
  - ``"steps"``: at reasoning-step ends: a segment is decoded until a token whose text holds
    a newline (:func:`~jaxrl_reason.rollout.chat.newline_token_ids`, the step boundary of
    ``arith_chain`` and the line-based step rules) or an end-of-turn token, with
    ``segment_len`` as its maximum length (a longer step is cut there, and forks there).
    Rows of one depth thus fork at different response positions. A row stopped at a
    newline continues at the next depth; one stopped at end of turn is a leaf.

Leaf budget: ``rollout.n_samples`` is the number of leaves (= training rows) per prompt.
EPTree uses ``M = min(num_chains, n)`` chains and spends the rest on branches, fork points in
rank order across trees (best of every tree first); a segment tree gives each unfinished
parent one child, then more (up to ``branching[d]``) while the budget lasts. Trees that
cannot spend the budget (too short to fork) leave empty rows (no tokens, no loss, no leaf).

Output: one :class:`Trajectories` row per leaf, the root-to-leaf response (``tokens``,
``old_logprobs`` along the path), plus one flattened forest per batch: each prompt has a
virtual root (the prompt, empty segment) whose children are its trees; each generation is
cut at its children's fork positions into segments (nodes); ``tok_node`` maps every token of
a row to the segment that owns it; ``leaf_row`` maps each leaf node to its row, so the score
phase fills ``leaf_reward``. ``tree_id`` = root chain (EPTree) or first-level branch
(segment); ``group_id`` = prompt.

Key schedule (per-prompt keys ``pk = split(key, B)`` as in :func:`sample`): chain ``m`` of
prompt ``b`` draws with row key ``fold_in(pk[b], m)`` (so the chains are ``sample(n=M)``'s
samples); branch ``j`` of round (or depth) ``r`` with row key
``fold_in(fold_in(fold_in(pk[b], SALT + r), j), 0)``: the draws of
``sample(prompt + prefix, fold_in(fold_in(pk[b], SALT + r), j))``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np

from jaxrl_reason.parallel.host import to_host
from jaxrl_reason.rollout import session as ses
from jaxrl_reason.rollout.chat import newline_token_ids
from jaxrl_reason.rollout.sampler import (
    SamplingConfig,
    _model_config,
    _prompt_keys,
    bucket_length,
    stop_and_pad_ids,
)
from jaxrl_reason.rollout.strategies import RolloutStrategy, register_strategy
from jaxrl_reason.rollout.trajectories import Trajectories

__all__ = ["BRANCH_SALT", "TreeConfig", "TreeStrategy", "build_forest", "eptree_leaves"]

#: Offset of branch-key folds (kept away from chain indices ``0 .. M-1``).
BRANCH_SALT = 1 << 20


@dataclasses.dataclass(frozen=True)
class TreeConfig:
    """``config.rollout.tree``.

    Attributes:
      mode: ``"eptree"`` | ``"segment"``.
      num_chains: EPTree ``M``, root chains per prompt (TreeRL: 6).
      fork_points: EPTree ``N``, fork points per tree per round (TreeRL: 2).
      branches: EPTree ``T``, continuations per fork point (TreeRL: 2).
      rounds: EPTree ``L``, expansion rounds (TreeRL: 1).
      segment_len: segment mode: tokens per segment before a fork (``fork_at="steps"``: the
        most tokens of one segment).
      branching: segment mode: children per node at each depth (SPO-tree: (6, 6, 6));
        ``len(branching)`` = depth; the last level runs to ``max_new_tokens``.
      fork_at: segment mode: ``"tokens"`` (every ``segment_len`` tokens) or ``"steps"`` (at
        the end of each reasoning step: a newline-holding token; see the module docstring).
    """

    mode: str = "eptree"
    num_chains: int = 6
    fork_points: int = 2
    branches: int = 2
    rounds: int = 1
    segment_len: int = 16
    branching: tuple[int, ...] = (2, 2)
    fork_at: str = "tokens"

    @classmethod
    def from_mapping(cls, m: Mapping[str, Any] | None) -> TreeConfig:
        """From ``config.rollout.tree`` (a dict or ConfigDict; missing keys: defaults)."""
        m = dict(m or {})
        kw = {f.name: m[f.name] for f in dataclasses.fields(cls) if f.name in m}
        if "branching" in kw:
            kw["branching"] = tuple(int(b) for b in kw["branching"])
        return cls(**kw)

    def max_leaves(self) -> int:
        """Leaves per prompt of the full shape (``M (1 + L N T)`` or ``prod(branching)``)."""
        if self.mode == "eptree":
            return self.num_chains * (1 + self.rounds * self.fork_points * self.branches)
        return int(math.prod(self.branching))


def eptree_leaves(m: int, n: int, l_rounds: int, t: int) -> int:
    """EPTree's leaves per prompt ``M * (1 + L * N * T)``."""
    return m * (1 + l_rounds * n * t)


@dataclasses.dataclass
class _Gen:
    """One generation (a continuous run of sampled tokens) of a prompt's forest."""

    prompt: int
    tree: int
    parent: int  # generation id, -1 for a tree's root chain
    start: int  # response position of its first token
    tokens: list[int]
    logprobs: list[float]
    finish: int
    row: int = -1  # row in the library session (-1: not kept)
    round: int = 0  # EPTree round / segment depth that drew it
    branch: int = -1  # its index j in the key schedule of its round (-1: a root chain)

    @property
    def end(self) -> int:
        return self.start + len(self.tokens)


def _path(gens: list[_Gen], g: int) -> list[int]:
    out = []
    while g >= 0:
        out.append(g)
        g = gens[g].parent
    return out[::-1]


def _full(gens: list[_Gen], g: int) -> tuple[list[int], list[float]]:
    """Root-to-``g`` response tokens and log-probs."""
    toks: list[int] = []
    lps: list[float] = []
    for h in _path(gens, g):
        toks = toks[: gens[h].start] + gens[h].tokens
        lps = lps[: gens[h].start] + gens[h].logprobs
    return toks, lps


def build_forest(gens: list[_Gen], num_prompts: int, n: int, width: int, nodes_per_prompt: int):
    """The forest and the rows of ``gens`` (host numpy).

    Returns a dict: ``leaf_gen int[B*n]`` (-1: empty row), ``tokens``, ``logprobs``,
    ``lengths``, ``finish``, ``tree_id``, ``tok_node`` (rows) and ``parent``, ``is_leaf``,
    ``node_valid``, ``leaf_row``, ``depth`` over ``num_prompts * nodes_per_prompt`` nodes.
    """
    big_n = num_prompts * nodes_per_prompt
    parent = np.full(big_n, -1, np.int32)
    is_leaf = np.zeros(big_n, bool)
    valid = np.zeros(big_n, bool)
    leaf_row = np.full(big_n, -1, np.int32)
    depth = np.zeros(big_n, np.int32)
    rows = num_prompts * n
    out_tok = np.zeros((rows, width), np.int32)
    out_lp = np.zeros((rows, width), np.float32)
    tok_node = np.full((rows, width), -1, np.int32)
    lengths = np.zeros(rows, np.int32)
    finish = np.ones(rows, np.int32)
    tree_id = np.zeros(rows, np.int32)
    leaf_gen = np.full(rows, -1, np.int64)

    children: dict[int, list[int]] = {}
    for i, g in enumerate(gens):
        children.setdefault(g.parent, []).append(i)
    segs: dict[int, list[tuple[int, int, int]]] = {}  # gen -> [(lo, hi, node)]
    next_node = [b * nodes_per_prompt + 1 for b in range(num_prompts)]
    for b in range(num_prompts):
        valid[b * nodes_per_prompt] = True  # virtual root (the prompt)
    leaves_of: dict[int, list[int]] = {b: [] for b in range(num_prompts)}
    for i, g in enumerate(gens):  # parents precede children
        kids = children.get(i, [])
        cuts = sorted({gens[c].start for c in kids if g.start < gens[c].start < g.end})
        bounds = [g.start, *cuts, g.end]
        if g.parent < 0:
            par = g.prompt * nodes_per_prompt
        else:
            par = next(nd for lo, hi, nd in segs[g.parent] if hi == g.start)
        segs[i] = []
        for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
            nd = next_node[g.prompt]
            next_node[g.prompt] += 1
            if nd >= (g.prompt + 1) * nodes_per_prompt:
                raise RuntimeError("tree rollout: forest exceeds its node bound")
            parent[nd], valid[nd], depth[nd] = par, True, depth[par] + 1
            segs[i].append((lo, hi, nd))
            par = nd
        if not any(gens[c].start == g.end for c in kids):
            is_leaf[segs[i][-1][2]] = True
            leaves_of[g.prompt].append(i)
    for b in range(num_prompts):
        if len(leaves_of[b]) > n:
            raise RuntimeError(f"tree rollout: prompt {b} has {len(leaves_of[b])} > {n} leaves")
        for j, g in enumerate(leaves_of[b]):
            r = b * n + j
            toks, lps = _full(gens, g)
            ln = len(toks)
            out_tok[r, :ln], out_lp[r, :ln], lengths[r] = toks, lps, ln
            finish[r], tree_id[r], leaf_gen[r] = gens[g].finish, gens[g].tree, g
            leaf_row[segs[g][-1][2]] = r
            path = _path(gens, g)
            for h, nxt in zip(path, [*path[1:], None], strict=True):
                hi_pos = gens[nxt].start if nxt is not None else gens[h].end
                for lo, hi, nd in segs[h]:
                    lo2, hi2 = max(lo, gens[h].start), min(hi, hi_pos)
                    if lo2 < hi2:
                        tok_node[r, lo2:hi2] = nd
    return {
        "leaf_gen": leaf_gen,
        "tokens": out_tok,
        "logprobs": out_lp,
        "lengths": lengths,
        "finish": finish,
        "tree_id": tree_id,
        "tok_node": tok_node,
        "parent": parent,
        "is_leaf": is_leaf,
        "node_valid": valid,
        "leaf_row": leaf_row,
        "depth": depth,
    }


@register_strategy
class TreeStrategy(RolloutStrategy):
    """Tree rollouts (EPTree or segment trees) on :mod:`rollout.session`; see the module
    docstring. ``settings.options["tree"]`` is ``config.rollout.tree``; ``settings.sampling.n`` is
    the leaf budget per prompt. After :meth:`collect`, :attr:`last_stats` holds
    ``leaves``, ``decoded_tokens`` (tokens the sampler drew, shared prefixes once),
    ``leaf_tokens`` (sum of root-to-leaf response lengths), ``tree_depth_max``."""

    name = "tree"
    supplies = frozenset({"parent", "is_leaf", "node_valid", "tok_node", "tree_id", "leaf_row"})

    def __init__(self, settings):
        super().__init__(settings)
        self.tree = TreeConfig.from_mapping((settings.options or {}).get("tree"))
        #: the last collect's generations (host), for tests and debugging.
        self.last_generations: list[_Gen] = []

    # -- decoding ----------------------------------------------------------------------------

    def _prompts(self, examples):
        s = self.settings
        tokens, mask = self.prompt_batch(examples)
        width = bucket_length(tokens.shape[1], s.sampling.prompt_bucket)
        pad = s.tokenizer.pad_token_id if s.tokenizer.pad_token_id is not None else 0
        extra = width - tokens.shape[1]
        tb = np.concatenate([np.full((len(tokens), extra), pad, np.int32), tokens], 1)
        mb = np.concatenate([np.zeros((len(tokens), extra), bool), mask], 1)
        return tokens, mask, tb, mb

    def _eptree(self, policy, tb, mb, pk) -> list[_Gen]:
        cfg, tc = self.settings.sampling, self.tree
        n, R = int(cfg.n), int(cfg.max_new_tokens)
        B = tb.shape[0]
        M = min(tc.num_chains, n)
        plen = mb.sum(1)
        s0 = ses.start(policy, tb, mb, max_len=tb.shape[1] + R * (tc.rounds + 1))
        lib = ses.fork(s0, np.repeat(np.arange(B), M))
        keys = ses.fold_keys(jnp.repeat(pk, M, axis=0), np.tile(np.arange(M), B))
        lib, toks, lps, lens, fin = ses.generate(policy, lib, keys, cfg, steps=R)
        toks, lps, lens, fin = (to_host(x) for x in (toks, lps, lens, fin))
        gens = []
        for r in range(B * M):
            ln = int(lens[r])
            gens.append(
                _Gen(
                    r // M,
                    r % M,
                    -1,
                    0,
                    toks[r, :ln].tolist(),
                    lps[r, :ln].tolist(),
                    int(fin[r]),
                    row=r,
                )
            )
        remaining = np.full(B, n - M)
        used: set[tuple[int, int]] = set()
        cap = min(M * tc.fork_points * tc.branches, n - M)
        for rnd in range(1, tc.rounds + 1):
            if cap <= 0 or not np.any(remaining > 0):
                break
            reqs = []  # (prompt, gen, position, branch index)
            for b in range(B):
                budget = int(min(remaining[b], cap))
                ranked = []
                for m in range(M):
                    cand = [
                        (-g.logprobs[i - g.start], gi, i)
                        for gi, g in enumerate(gens)
                        if g.prompt == b and g.tree == m
                        for i in range(g.start + 1, g.end)
                        if (gi, i) not in used
                    ]
                    cand.sort(key=lambda c: (-c[0], c[1], c[2]))
                    ranked.append(cand[: tc.fork_points])
                order = [
                    c
                    for k in range(tc.fork_points)
                    for lst in ranked
                    if k < len(lst)
                    for c in [lst[k]]
                ]
                j = 0
                for _, gi, i in order:
                    if budget <= 0:
                        break
                    used.add((gi, i))
                    for _ in range(min(tc.branches, budget)):
                        reqs.append((b, gi, i, j))
                        j += 1
                        budget -= 1
                remaining[b] -= j
            if not reqs:
                break
            rows = B * cap
            src = np.zeros(rows, np.int64)
            keep = np.zeros(rows, np.int32)
            feed = np.zeros((rows, 1), np.int32)
            active = np.zeros(rows, bool)
            limit = np.zeros(rows, np.int32)
            kdata = np.zeros((rows, 2), np.int64)
            slot = {b: 0 for b in range(B)}
            placed = []
            for b, gi, i, j in reqs:
                r = b * cap + slot[b]
                slot[b] += 1
                g = gens[gi]
                src[r], keep[r] = g.row, plen[b] + i - 1
                feed[r, 0] = g.tokens[i - 1 - g.start]
                active[r], limit[r], kdata[r] = True, R - i, (BRANCH_SALT + rnd, j)
                placed.append((r, b, gi, i))
            s = ses.fork(lib, src)
            s = ses.rewind(s, keep)
            s = ses.extend(policy, s, feed, active[:, None])
            pkr = jnp.repeat(pk, cap, axis=0)
            bkeys = ses.fold_keys(ses.fold_keys(pkr, kdata[:, 0]), kdata[:, 1])
            s, toks, lps, lens, fin = ses.generate(
                policy,
                s,
                ses.fold_keys(bkeys, np.zeros(rows)),
                cfg,
                steps=R - 1,
                active=active,
                limit=limit,
            )
            toks, lps, lens, fin = (to_host(x) for x in (toks, lps, lens, fin))
            base = lib.batch
            for r, b, gi, i in placed:
                ln = int(lens[r])
                gens.append(
                    _Gen(
                        b,
                        gens[gi].tree,
                        gi,
                        i,
                        toks[r, :ln].tolist(),
                        lps[r, :ln].tolist(),
                        int(fin[r]),
                        row=base + r,
                        round=rnd,
                        branch=int(kdata[r, 1]),
                    )
                )
            if rnd < tc.rounds:
                lib = ses.concat([lib, s])
        return gens

    def _step_stops(self, policy) -> tuple[SamplingConfig, frozenset[int]]:
        """The sampling config of a step segment (stop at a newline token or end of turn) and
        the end-of-turn ids (a newline token that is also one stays end of turn)."""
        cfg = self.settings.sampling
        eos, _ = stop_and_pad_ids(cfg, _model_config(policy))
        nl = set(newline_token_ids(self.settings.tokenizer)) - set(eos)
        if not nl:
            raise ValueError(
                "rollout.tree.fork_at='steps': the tokenizer has no newline-holding token to "
                "end a step; use fork_at='tokens'"
            )
        step_cfg = dataclasses.replace(cfg, stop_token_ids=tuple(sorted(nl | set(eos))))
        return step_cfg, frozenset(eos)

    def _segment(self, policy, tb, mb, pk) -> list[_Gen]:
        cfg, tc = self.settings.sampling, self.tree
        n, R, k = int(cfg.n), int(cfg.max_new_tokens), int(tc.segment_len)
        by_steps = tc.fork_at == "steps"
        B = tb.shape[0]
        if by_steps:
            # Forks sit wherever steps end, so every depth may lie inside the response; the
            # cache holds (D - 1) segments of at most k slots and a last call of R slots.
            D = len(tc.branching)
            step_cfg, eos = self._step_stops(policy)
            max_len = tb.shape[1] + (D - 1) * min(k, R) + R
        else:
            # Depths whose fork point lies inside the response (d * k < R); deeper ones drop.
            D = min(len(tc.branching), -(-R // k))
            max_len = tb.shape[1] + R
        s = ses.start(policy, tb, mb, max_len=max_len)
        gens: list[_Gen] = []
        parents: dict[int, list[int]] = {b: [-1] for b in range(B)}  # alive gens (-1 = prompt)
        n_leaves = np.zeros(B, np.int64)
        prev_rows = np.arange(B)  # row of each alive gen in the current session
        row_of: dict[int, int] = {}
        for d in range(D):
            cap = min(n, int(math.prod(tc.branching[: d + 1])))
            last = d == D - 1
            if by_steps:
                steps = R if last else min(k, R)
            else:
                steps = k if not last else R - d * k
            rows = B * cap
            src = np.zeros(rows, np.int64)
            active = np.zeros(rows, bool)
            limit = np.zeros(rows, np.int32)
            kdata = np.zeros((rows, 2), np.int64)
            placed = []
            for b in range(B):
                alive = parents[b]
                budget = int(n - n_leaves[b])
                count = {p: 1 for p in alive} if budget >= len(alive) else {}
                budget -= len(count)
                while budget > 0:
                    grew = False
                    for p in alive:
                        if budget > 0 and count[p] < tc.branching[d]:
                            count[p] += 1
                            budget -= 1
                            grew = True
                    if not grew:
                        break
                j = 0
                for p in alive:
                    for _ in range(count.get(p, 0)):
                        r = b * cap + j
                        src[r] = prev_rows[b] if p < 0 else row_of[p]
                        active[r] = True
                        used = 0 if p < 0 else gens[p].end
                        limit[r] = min(steps, R - used)
                        kdata[r] = (BRANCH_SALT + d, j)
                        placed.append((r, b, p, j))
                        j += 1
            s = ses.fork(s, src)
            pkr = jnp.repeat(pk, cap, axis=0)
            if d == 0:
                rkeys = ses.fold_keys(pkr, kdata[:, 1])
            else:
                rkeys = ses.fold_keys(
                    ses.fold_keys(ses.fold_keys(pkr, kdata[:, 0]), kdata[:, 1]), np.zeros(rows)
                )
            s, toks, lps, lens, fin = ses.generate(
                policy,
                s,
                rkeys,
                step_cfg if by_steps and not last else cfg,
                steps=steps,
                active=active,
                limit=limit,
            )
            toks, lps, lens, fin = (to_host(x) for x in (toks, lps, lens, fin))
            if by_steps and not last:
                # A newline stop ends a step, not the response: the row goes on (or, at the
                # budget, is a leaf cut by length); only an end-of-turn stop is FINISH_STOP.
                ends = toks[np.arange(rows), np.maximum(lens - 1, 0)]
                nl_stop = (fin == ses.FINISH_STOP) & ~np.isin(ends, list(eos))
                fin = np.where(nl_stop, ses.FINISH_LENGTH, fin)
            parents = {b: [] for b in range(B)}
            row_of = {}
            for r, b, p, j in placed:
                ln = int(lens[r])
                start = 0 if p < 0 else gens[p].end
                tree = j if p < 0 else gens[p].tree
                gens.append(
                    _Gen(
                        b,
                        tree,
                        p,
                        start,
                        toks[r, :ln].tolist(),
                        lps[r, :ln].tolist(),
                        int(fin[r]),
                        round=d,
                        branch=j,
                    )
                )
                gi = len(gens) - 1
                if not last and int(fin[r]) == ses.FINISH_LENGTH and gens[gi].end < R:
                    parents[b].append(gi)
                    row_of[gi] = r
                else:
                    n_leaves[b] += 1
        return gens

    # -- the strategy --------------------------------------------------------------------------

    def collect(self, policy, examples, key) -> Trajectories:
        s, tc = self.settings, self.tree
        n, R = int(s.sampling.n), int(s.sampling.max_new_tokens)
        tokens, mask, tb, mb = self._prompts(examples)
        B = tokens.shape[0]
        pk = _prompt_keys(key, B)
        if tc.mode == "eptree":
            gens = self._eptree(policy, tb, mb, pk)
            per_prompt = 1 + 2 * n
        elif tc.mode == "segment":
            gens = self._segment(policy, tb, mb, pk)
            per_prompt = 1 + n * len(tc.branching)
        else:
            raise ValueError(f"rollout.tree.mode must be 'eptree' or 'segment', got {tc.mode!r}")
        self.last_generations = gens
        f = build_forest(gens, B, n, R, per_prompt)
        lengths = f["lengths"]
        resp = np.arange(R)[None, :] < lengths[:, None]
        self.last_stats = {
            "leaves": float((f["leaf_row"] >= 0).sum()),
            "decoded_tokens": float(sum(len(g.tokens) for g in gens)),
            "leaf_tokens": float(lengths.sum()),
            "tree_depth_max": float(f["depth"].max()),
        }
        return Trajectories(
            prompt_tokens=np.repeat(tokens, n, axis=0).astype(np.int32),
            prompt_mask=np.repeat(mask, n, axis=0).astype(bool),
            tokens=f["tokens"],
            attention_mask=resp,
            loss_mask=resp.astype(np.float32),
            old_logprobs=np.where(resp, f["logprobs"], 0.0).astype(np.float32),
            group_id=np.repeat(np.arange(B, dtype=np.int32), n),
            segment_id=self.segment_ids(f["tokens"], lengths),
            lengths=lengths,
            finish_reason=f["finish"],
            parent=f["parent"],
            is_leaf=f["is_leaf"],
            node_valid=f["node_valid"],
            tok_node=f["tok_node"],
            tree_id=f["tree_id"],
            leaf_row=f["leaf_row"],
        )
