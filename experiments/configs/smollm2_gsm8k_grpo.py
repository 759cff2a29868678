"""GRPO on GSM8K with SmolLM2-135M-Instruct, reading GSM8K from a local folder (offline).

Set ``--config.task.data_dir=/path/to/gsm8k`` (a folder with train.jsonl / test.jsonl, the
files of openai/grade-school-math); an empty or wrong path stops the run with the fix. To
download through tensorflow-datasets instead: ``--config.task.source=tfds``.
"""

from experiments.configs.common import base_config


def get_config():
    c = base_config()
    c.task.name = "gsm8k"
    c.task.system_prompt = None
    c.task.source = "local"
    c.task.data_dir = ""  # required: the folder with train.jsonl / test.jsonl
    c.rollout.max_new_tokens = 256
    c.rollout.batch_prompts = 8
    c.rollout.n_samples = 8
    c.train.mini_batch_size = 64
    c.train.micro_batch_size = 8
    c.eval.num_prompts = 200
    return c
