"""PPO with GAE and a linear value head on SmolLM2's hidden states, 2-digit sums."""

from experiments.configs.common import base_config


def get_config():
    c = base_config()
    c.algo.estimator = "gae"
    c.algo.value_head = True
    c.algo.estimator_kwargs = {"gamma": 1.0, "lam": 0.95}
    c.rollout.n_samples = 4
    c.train.ppo_epochs = 2
    c.train.mini_batch_size = 16
    c.train.micro_batch_size = 16
    return c
