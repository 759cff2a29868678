"""RLOO (Ahmadian et al. 2024, arXiv 2402.14740) on 2-digit sums: leave-one-out baselines."""

from experiments.configs.common import base_config


def get_config():
    c = base_config()
    c.algo.estimator = "rloo"
    return c
