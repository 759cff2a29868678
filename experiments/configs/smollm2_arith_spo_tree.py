"""SPO-tree on the default task (2-digit sums): segment trees forking every 8 tokens,
(2, 2, 2) children per depth, 8 leaves per prompt."""

from experiments.configs.smollm2_arith_chain_spo_tree import get_config as chain_spo
from experiments.configs.smollm2_arith_grpo import get_config as arith_config


def get_config():
    c = arith_config()
    c.algo.estimator = "spo_tree"
    c.rollout.strategy = "tree"
    c.rollout.tree = chain_spo().rollout.tree
    c.rollout.tree.segment_len = 8
    c.rollout.n_samples = 8
    return c
