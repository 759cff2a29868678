"""REINFORCE++ (Hu et al. 2025, arXiv 2501.03262) on 2-digit sums: discounted returns whitened
over the batch, with a small KL-to-reference loss term."""

from experiments.configs.common import base_config


def get_config():
    c = base_config()
    c.algo.estimator = "reinforce_pp"
    c.loss.kl_coef = 0.001
    return c
