"""A tiny random model of the same code: one GRPO step in seconds (tests, smoke runs)."""

from experiments.configs.common import base_config


def get_config():
    c = base_config()
    c.model.name = "tiny_debug"
    c.total_steps = 2
    c.eval_every = 2
    c.checkpoint_every = 1
    c.eval_at_start = False
    c.rollout.batch_prompts = 2
    c.rollout.n_samples = 2
    c.rollout.max_new_tokens = 8
    c.train.mini_batch_size = 4
    c.train.micro_batch_size = 2
    c.eval.num_prompts = 4
    c.eval.batch_prompts = 4
    c.eval.n_samples = 2
    c.eval.ks = (1, 2)
    c.optim.learning_rate = 1e-3
    return c
