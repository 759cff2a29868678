"""The embedded default (the README's main job): GRPO, SmolLM2-135M-Instruct, 2-digit sums.

8 prompts x 8 samples per step at temperature 0.8, answers of at most 24 tokens, one AdamW
update per step (lr 2e-5) of the last 12 layers; held-out greedy accuracy on 100 sums every
10 steps. Sized for a 2-core CPU: see docs/results.md for the measured curve.
"""

from experiments.configs.common import base_config


def get_config():
    return base_config()
