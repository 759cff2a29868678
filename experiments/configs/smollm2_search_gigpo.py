"""GiGPO (Feng et al. 2025, arXiv 2505.10978): anchor-state groups from identical
observations, on the multi-hop search task.

Needs ``rollout.strategy = "env"`` (multi-turn episodes with a search tool); until that
strategy is registered, config validation rejects this config with a message naming the
missing input and the strategy that supplies it.
"""

from experiments.configs.common import base_config


def get_config():
    c = base_config()
    c.algo.estimator = "gigpo"
    c.rollout.strategy = "env"
    return c
