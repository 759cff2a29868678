"""TreeRL (EPTree rollouts, treerl advantages) on the default task (2-digit sums), at
TreeRL's released tree shape (M, N, L, T) = (6, 2, 1, 2): 30 leaves per prompt."""

from experiments.configs.smollm2_arith_chain_treerl import get_config as chain_treerl
from experiments.configs.smollm2_arith_grpo import get_config as arith_config


def get_config():
    c = arith_config()
    c.algo.estimator = "treerl"
    c.rollout.strategy = "tree"
    c.rollout.tree = chain_treerl().rollout.tree
    c.rollout.n_samples = 30
    c.rollout.batch_prompts = 4
    c.train.mini_batch_size = 60
    c.train.micro_batch_size = 20
    return c
