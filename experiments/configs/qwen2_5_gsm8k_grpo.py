"""GRPO on GSM8K with Qwen2.5 from a local Hugging Face checkpoint (GPU / TPU sized).

Set ``--config.model.name=/path/to/Qwen2.5-0.5B-Instruct`` (config.json + safetensors).
GSM8K is downloaded through tensorflow-datasets (``task.source="tfds"``, to ``$TFDS_DATA_DIR``
or the cache; an accelerator VM is online); offline, set ``--config.task.source=local
--config.task.data_dir=/path/to/gsm8k`` (a folder with train.jsonl / test.jsonl).
"""

from experiments.configs.common import base_config


def get_config():
    c = base_config()
    c.model.name = "/path/to/Qwen2.5-0.5B-Instruct"
    c.model.dtype = "bfloat16"
    c.model.param_dtype = "float32"
    c.task.name = "gsm8k"
    c.task.system_prompt = None
    c.task.source = "tfds"  # an explicit download (see the docstring for the offline way)
    c.rollout.batch_prompts = 64
    c.rollout.n_samples = 8
    c.rollout.max_new_tokens = 512
    c.train.mini_batch_size = 256
    c.train.micro_batch_size = 32
    c.optim.learning_rate = 1e-6
    c.loss.kl_coef = 0.001
    c.loss.kl_kind = "k3"
    c.total_steps = 500
    c.eval_every = 50
    c.checkpoint_every = 50
    c.eval.num_prompts = 500
    c.eval.n_samples = 8
    c.eval.ks = (1, 8)
    c.optim.trainable = "all"
    return c
