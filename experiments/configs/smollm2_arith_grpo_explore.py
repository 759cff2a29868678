"""GRPO + UCB-Con outcome exploration (Song, Kempe & Munos 2025) on 2-digit sums.

Same as the default but each sample earns ``c * (min(1, sqrt(1 / N(x, a))) - b0)`` for its
final answer ``a`` having been seen ``N`` times for this prompt (``c = 0.2``, ``b0 = 0.5``).
"""

from experiments.configs.common import base_config


def get_config():
    c = base_config()
    c.reward.weights.explore = 0.2
    c.explore.variant = "ucb_con"
    c.explore.b0 = 0.5
    c.eval.n_samples = 8
    c.eval.ks = (1, 8)
    return c
