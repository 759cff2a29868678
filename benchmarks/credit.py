"""Benchmark: tree credit on a forest of 64 trees x 32 leaves x depth 8, under ``jit``.

Every tree is the trie of 32 distinct random root-to-leaf paths of depth 8 (binary choices),
under a virtual root; trees sit side by side in one flattened forest. One training row per
leaf (2048 rows), each row the 8 segments of its path, ``--tokens`` tokens in all.

Usage::

    python -m benchmarks.credit [--trees 64] [--leaves 32] [--depth 8] [--tokens 512]

Prints one line per method: node count, rows x tokens, median milliseconds per call
(compilation excluded) over ``--iters`` calls.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_reason.credit import trees


def build_forest(n_trees: int, n_leaves: int, depth: int, tokens: int, seed: int = 0):
    """Flattened forest arrays plus ``tok_node [B, T]`` (one row per leaf)."""
    if n_leaves > 2**depth:
        raise ValueError(f"{n_leaves} distinct binary paths need depth >= log2({n_leaves})")
    rng = np.random.default_rng(seed)
    parent, is_leaf, reward, rows = [], [], [], []
    seg_len = tokens // depth
    for _ in range(n_trees):
        codes = rng.choice(2**depth, size=n_leaves, replace=False)
        base = len(parent)
        ids = {(): base}
        parent.append(-1)
        is_leaf.append(False)
        reward.append(0.0)
        for code in codes:
            bits = tuple((int(code) >> (depth - 1 - d)) & 1 for d in range(depth))
            path = []
            for d in range(1, depth + 1):
                key = bits[:d]
                if key not in ids:
                    ids[key] = len(parent)
                    parent.append(ids[bits[: d - 1]])
                    is_leaf.append(d == depth)
                    reward.append(float(rng.integers(0, 2)) if d == depth else 0.0)
                path.append(ids[key])
            row = np.repeat(path, seg_len)
            rows.append(np.pad(row, (0, tokens - len(row)), constant_values=-1))
    return (
        np.asarray(parent, np.int32),
        np.asarray(is_leaf, bool),
        np.asarray(reward, np.float32),
        np.ones(len(parent), bool),
        np.stack(rows).astype(np.int32),
    )


def _time(fn, args, iters: int) -> float:
    jax.block_until_ready(fn(*args))  # compile
    ts = []
    for _ in range(iters):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts)) * 1e3


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trees", type=int, default=64)
    ap.add_argument("--leaves", type=int, default=32)
    ap.add_argument("--depth", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--iters", type=int, default=20)
    a = ap.parse_args(argv)
    parent, leaf, reward, valid, tok = build_forest(a.trees, a.leaves, a.depth, a.tokens)
    mask = tok >= 0
    b, t = tok.shape
    g = np.zeros(b, np.int32)
    zeros = np.zeros((b, t), np.float32)

    # Every array is an argument (a closure constant would be constant-folded by XLA).
    def call(fn, **kw):
        return jax.jit(
            lambda tk, m, z, gi, p, lf, r, v: fn(
                z, m, gi, tok_node=tk, parent=p, is_leaf=lf, leaf_reward=r, node_valid=v, **kw
            )
        )

    methods = {
        "treerl(paper)": call(trees.treerl),
        "treerl(code)": call(trees.treerl, variant="code"),
        "spo_tree": call(trees.spo_tree),
        "sibling_grpo": call(trees.sibling_grpo),
        "tree_values(leaf_mean)": jax.jit(
            lambda tk, m, z, gi, p, lf, r, v: trees.tree_values(p, lf, r, v)
        ),
        "tree_values(child_mean)": jax.jit(
            lambda tk, m, z, gi, p, lf, r, v: trees.tree_values(p, lf, r, v, mode="child_mean")
        ),
    }
    args = tuple(jnp.asarray(x) for x in (tok, mask, zeros, g, parent, leaf, reward, valid))
    dev = jax.devices()[0]
    print(
        f"forest: {a.trees} trees x {a.leaves} leaves x depth {a.depth}: N={len(parent)} nodes, "
        f"rows x tokens = {b} x {t}; device {dev.platform} ({dev.device_kind})"
    )
    for name, fn in methods.items():
        ms = _time(fn, args, a.iters)
        print(f"{name:24s} {ms:8.3f} ms/call (jit, median of {a.iters})")


if __name__ == "__main__":
    main()
