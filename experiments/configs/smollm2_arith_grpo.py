"""The embedded default (the README's main job): GRPO, SmolLM2-135M-Instruct, 2-digit sums.

8 prompts x 4 samples per step, answers of at most 24 tokens, one update per step; held-out
greedy accuracy on 100 sums every 10 steps. Sized for a 2-core CPU (docs/results.md).
"""

from experiments.configs.common import base_config


def get_config():
    return base_config()
