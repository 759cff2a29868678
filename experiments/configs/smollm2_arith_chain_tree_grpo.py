"""Tree-GRPO (Ji et al. 2025, arXiv 2509.21240): intra- and inter-tree group advantages,
on arith_chain.

Tree-GRPO's script shape is m=2 trees, l=1 expansion of n=2 nodes, one continuation each
(3 leaves per tree); here the expansion points are EPTree's highest -log p tokens instead of
uniformly drawn nodes: 2 * (1 + 1 * 2 * 1) = 6 leaves per prompt.
"""

from experiments.configs.smollm2_arith_chain_grpo import get_config as chain_config


def get_config():
    c = chain_config()
    c.algo.estimator = "tree_grpo"
    c.rollout.strategy = "tree"
    c.rollout.tree.mode = "eptree"
    c.rollout.tree.num_chains = 2
    c.rollout.tree.fork_points = 2
    c.rollout.tree.rounds = 1
    c.rollout.tree.branches = 1
    c.rollout.n_samples = 6
    c.train.mini_batch_size = 48
    c.train.micro_batch_size = 16
    return c
