"""GRPO with a calculator tool (ARTIST / ToRL style) on multi-step arithmetic with 2-4 digit
operands (``task.name="arith_chain_tool"``): ``<calculator>expr</calculator>`` calls answered
with ``<result>...</result>``, the final answer as ``<answer>N</answer>`` (or ``#### N``).
"""

from experiments.configs.common import base_config


def get_config():
    c = base_config()
    c.task.name = "arith_chain_tool"
    c.task.num_ops = 3
    c.task.low = 10
    c.task.high = 9999
    c.task.num_train = 1000
    c.task.num_test = 100
    c.rollout.strategy = "env"
    c.rollout.env.name = "tool"
    c.rollout.env.tools = ("calculator",)
    c.rollout.env.max_turns = 4
    c.rollout.env.max_turn_tokens = 96
    c.rollout.env.max_obs_tokens = 32
    c.rollout.max_new_tokens = 384
    c.eval_every = 10  # greedy held-out episodes with the same tools (evaluate_episodes)
    c.eval.num_prompts = 50
    return c
