"""TTRL on 2-digit sums: the reward is agreement with the group's majority answer.

No gold label enters training (``reward.weights.correct = 0``); the verifier still measures
accuracy for the logs and the held-out evaluation.
"""

from experiments.configs.common import base_config


def get_config():
    c = base_config()
    c.reward.weights.correct = 0.0
    c.reward.weights.ttrl = 1.0
    c.rollout.n_samples = 8
    c.train.mini_batch_size = 64
    c.train.micro_batch_size = 32
    return c
