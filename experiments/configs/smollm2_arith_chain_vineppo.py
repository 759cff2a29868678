"""VinePPO (Kazemnejad et al. 2024): Monte Carlo step values from K continuations of each
step prefix, on arith_chain.

Needs ``rollout.strategy = "vine"``; until that strategy is registered, config validation
rejects this config with a message naming the missing input and the strategy that supplies it.
"""

from experiments.configs.smollm2_arith_chain_grpo import get_config as chain_config


def get_config():
    c = chain_config()
    c.algo.estimator = "vineppo"
    c.rollout.strategy = "vine"
    return c
