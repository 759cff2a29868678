"""GRPO on GSM8K with SmolLM2-135M-Instruct (reads GSM8K through TFDS, or task.data_dir)."""

from experiments.configs.common import base_config


def get_config():
    c = base_config()
    c.task.name = "gsm8k"
    c.task.system_prompt = None
    c.task.data_dir = ""  # a directory with train.jsonl / test.jsonl works offline
    c.rollout.max_new_tokens = 256
    c.rollout.batch_prompts = 8
    c.rollout.n_samples = 8
    c.train.mini_batch_size = 64
    c.train.micro_batch_size = 8
    c.eval.num_prompts = 200
    return c
