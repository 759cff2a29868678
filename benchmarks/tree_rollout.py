"""Tree rollout (EPTree on rollout.session) against the group sampler, same leaves.

    python -m benchmarks.tree_rollout                     # SmolLM2-135M-Instruct, 2 prompts
    python -m benchmarks.tree_rollout --prompts 1 --max-new-tokens 64
    python -m benchmarks.tree_rollout --mode segment --segment-len 16

Both produce ``leaves`` responses per prompt of at most ``--max-new-tokens`` tokens: the group
sampler as ``n = leaves`` i.i.d. samples (one prefill, one decode loop), the tree strategy as
EPTree at TreeRL's released shape ``(M, N, L, T) = (6, 2, 1, 2)`` (30 leaves: 6 chains, then
one round of 2 forks per tree at the highest ``-log p`` tokens with 2 branches each). Printed:
decoded tokens per leaf (tokens the sampler drew; a tree's shared prefixes count once) and
wall-clock per leaf, each as the group / tree ratio. Each side runs once to compile and warm
up, then once timed (same prompts, another key).

Goal (issue 13): 1.6x fewer decoded tokens and 1.4x less wall-clock per leaf for the tree.
"""

from __future__ import annotations

import argparse
import time

QUESTIONS = [
    "Compute 47 + 38. Think step by step, then give the answer.",
    "A shop sells pens at 3 dollars each. How much do 14 pens cost? Explain briefly.",
    "What is 125 - 67? Show your work.",
    "Compute 23 * 4 step by step.",
]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=2)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument(
        "--mode",
        choices=("eptree", "segment"),
        default="eptree",
        help="eptree: TreeRL's (6, 2, 1, 2); segment: forks every --segment-len tokens, "
        "(2, 3, 5) children per depth (also 30 leaves)",
    )
    ap.add_argument("--segment-len", type=int, default=16)
    args = ap.parse_args(argv)

    import jax
    import ml_collections
    import numpy as np

    from jaxrl_reason.models.build import build_model
    from jaxrl_reason.rollout import SamplingConfig, left_pad, sample, strategies
    from jaxrl_reason.rollout.chat import stop_token_ids

    model, tok = build_model(ml_collections.ConfigDict({"name": "smollm2-135m-instruct"}))
    leaves = 6 * (1 + 1 * 2 * 2)
    cfg = SamplingConfig(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        n=leaves,
        stop_token_ids=tuple(stop_token_ids(tok, model)),
        prompt_bucket=16,
    )
    qs = [QUESTIONS[i % len(QUESTIONS)] for i in range(args.prompts)]
    ids = []
    for q in qs:
        out = tok.apply_chat_template(
            [{"role": "user", "content": q}], add_generation_prompt=True, tokenize=True
        )
        ids.append(list(out["input_ids"] if hasattr(out, "keys") else out))
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    tokens, mask = left_pad(ids, pad)

    settings = strategies.RolloutSettings(
        tokenizer=tok,
        task=None,
        sampling=cfg,
        step_rule="double_newline",
        options={
            "tree": (
                {"mode": "eptree", "num_chains": 6, "fork_points": 2, "rounds": 1, "branches": 2}
                if args.mode == "eptree"
                else {"mode": "segment", "segment_len": args.segment_len, "branching": (2, 3, 5)}
            )
        },
    )
    tree = strategies.get_strategy("tree")(settings)
    tree.prompt_batch = lambda examples: (tokens, mask)

    def run_group(key):
        out = sample(model, tokens, mask, key, cfg)
        return float(np.asarray(out.lengths).sum()), leaves * len(qs)

    def run_tree(key):
        tree.collect(model, list(range(len(qs))), key)
        # a segment tree whose rows stop before a fork spends fewer leaves than its budget
        return tree.last_stats["decoded_tokens"], tree.last_stats["leaves"]

    results = {}
    for name, fn in (("group", run_group), ("tree", run_tree)):
        t0 = time.perf_counter()
        fn(jax.random.key(0))  # compile + warm up
        warm = time.perf_counter() - t0
        t0 = time.perf_counter()
        decoded, n_leaves = fn(jax.random.key(1))
        wall = time.perf_counter() - t0
        results[name] = (decoded / n_leaves, wall / n_leaves)
        print(
            f"{name:5s}: {decoded:8.0f} decoded tokens, {n_leaves:4.0f} leaves, {wall:7.2f} s "
            f"(first call {warm:.1f} s), per leaf: {decoded / n_leaves:6.1f} tokens, "
            f"{1e3 * wall / n_leaves:7.1f} ms",
            flush=True,
        )
    st = tree.last_stats
    print(
        f"tree stats: leaves={st['leaves']:.0f} leaf_tokens={st['leaf_tokens']:.0f} "
        f"depth_max={st['tree_depth_max']:.0f}"
    )
    (gd, gw), (td, tw) = results["group"], results["tree"]
    print(f"decoded tokens per leaf, group / tree: {gd / max(td, 1e-9):.2f}x (goal 1.6x)")
    print(f"wall-clock per leaf,     group / tree: {gw / max(tw, 1e-9):.2f}x (goal 1.4x)")


if __name__ == "__main__":
    main()
