"""SPO-tree (Guo et al. 2025): segment trees, each edge's advantage from its subtree, on
arith_chain.

Segment tree: a fork every 16 tokens, 2 children per node at depths 0, 1, 2 (SPO-tree uses
(6, 6, 6) with 600-token segments; this is its small-budget shape): 8 leaves per prompt.
"""

from experiments.configs.smollm2_arith_chain_grpo import get_config as chain_config


def get_config():
    c = chain_config()
    c.algo.estimator = "spo_tree"
    c.rollout.strategy = "tree"
    c.rollout.tree.mode = "segment"
    c.rollout.tree.segment_len = 16
    c.rollout.tree.branching = (2, 2, 2)
    c.rollout.n_samples = 8
    return c
