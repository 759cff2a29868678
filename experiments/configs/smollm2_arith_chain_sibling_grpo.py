"""Sibling-relative GRPO over a tree rollout (V-STAR-style), on arith_chain.

Segment tree: 4 first segments of 16 tokens per prompt, each forked into 2 continuations:
8 leaves per prompt; siblings are compared at both depths.
"""

from experiments.configs.smollm2_arith_chain_grpo import get_config as chain_config


def get_config():
    c = chain_config()
    c.algo.estimator = "sibling_grpo"
    c.rollout.strategy = "tree"
    c.rollout.tree.mode = "segment"
    c.rollout.tree.segment_len = 16
    c.rollout.tree.branching = (4, 2)
    c.rollout.n_samples = 8
    return c
