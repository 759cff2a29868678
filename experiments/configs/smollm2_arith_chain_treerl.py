"""TreeRL (Hou et al. 2025): EPTree forking at high-entropy tokens, global + local
advantages from subtree outcomes, on arith_chain.

TreeRL's released tree shape (M, N, L, T) = (6, 2, 1, 2): 6 chains per prompt, one round of
2 forks per tree at the highest -log p tokens, 2 branches each: 6 * (1 + 2 * 2) = 30 leaves
per prompt, all trained on (rollout.n_samples is the leaf budget).
"""

from experiments.configs.smollm2_arith_chain_grpo import get_config as chain_config


def get_config():
    c = chain_config()
    c.algo.estimator = "treerl"
    c.rollout.strategy = "tree"
    c.rollout.tree.mode = "eptree"
    c.rollout.tree.num_chains = 6
    c.rollout.tree.fork_points = 2
    c.rollout.tree.rounds = 1
    c.rollout.tree.branches = 2
    c.rollout.n_samples = 30
    c.rollout.batch_prompts = 4
    c.train.mini_batch_size = 60
    c.train.micro_batch_size = 20
    return c
