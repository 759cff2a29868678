"""Sibling-relative GRPO over a tree rollout (V-STAR-style), on arith_chain.

Needs ``rollout.strategy = "tree"``; until that strategy is registered, config validation
rejects this config with a message naming the missing input and the strategy that supplies it.
"""

from experiments.configs.smollm2_arith_chain_grpo import get_config as chain_config


def get_config():
    c = chain_config()
    c.algo.estimator = "sibling_grpo"
    c.rollout.strategy = "tree"
    return c
