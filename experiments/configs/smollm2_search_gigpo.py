"""GiGPO (Feng et al. 2025, arXiv 2505.10978) on multi-hop search: episode-level GRPO plus
step-level advantages within anchor-state groups (identical observations before an action,
``Trajectories.anchor_ids`` from the ``env`` strategy).
"""

from experiments.configs.smollm2_search_grpo import search_config


def get_config():
    c = search_config()
    c.algo.estimator = "gigpo"
    c.algo.estimator_kwargs.gamma = 0.95
    c.algo.estimator_kwargs.omega = 1.0
    return c
