"""GRPO on ``arith_chain`` (generated chains of + and - on 1-digit numbers, one operation per
line), the step-credit testbed: every example knows its intermediate values.

Provisional defaults (lengths 1-2, operands 1-9); the measured base accuracy is in
docs/results.md.
"""

from experiments.configs.common import base_config


def get_config():
    c = base_config()
    c.task.name = "arith_chain"
    c.task.lengths = (1, 2)
    c.task.low = 1
    c.task.high = 9
    c.task.ops = "+-"
    c.task.template = ""  # the task's own: one operation per line, then "#### answer"
    c.rollout.max_new_tokens = 64
    return c
