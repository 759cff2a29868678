"""GRPO, SmolLM2-135M-Instruct, ``arith_chain``: 1-3 chained ``+``/``-`` on 1-digit operands.

The problems (``Compute step by step. Start with 7. Add 1, then subtract 5. Write one equation
per line, then #### followed by the final answer.``) carry their true intermediate values, so
the oracle step labels (``ArithChainTask.step_labels``) are available for process rewards.
Lengths 1, 2, 3 are interleaved: length 1 is the easy end of the curriculum.

Measured base accuracy of SmolLM2-135M-Instruct (greedy, held-out prompts,
``python -m experiments.arith_chain_base --n 96 --mix 1,2,3 --ranges 1-9``): **24.0 %** final
answers on this mix (oracle step accuracy 38.9 %); per length (n=24 each, ``--n 24
--ranges 1-9``): 54 % / 0 % / 17 % for 1 / 2 / 3 operations. Greedy responses average 54 tokens
(2 % reach 96): ``max_new_tokens = 96``. The model's usual mistake is to apply every operation
to the start value instead of the running result, which is what the step labels expose.

Option: ``--config.curriculum.enabled=True`` replays half of each batch (``curriculum.
replay_fraction``) from the prompts already seen, drawn by ``p (1 - p)`` of their moving pass
rate (``jaxrl_reason/data/curriculum.py``): with 8 samples per prompt and length-2/3 chains
mostly failed, it keeps the prompts whose groups still have a GRPO signal.
"""

from experiments.configs.common import base_config


def get_config():
    c = base_config()
    c.task.name = "arith_chain"
    c.task.lengths = (1, 2, 3)
    c.task.low = 1
    c.task.high = 9
    c.task.ops = "+-"
    c.task.seed = 0
    c.task.system_prompt = ""  # the chat template's default system turn
    c.task.template = (
        "Compute step by step. {problem} Write one equation per line, "
        "then #### followed by the final answer."
    )
    c.rollout.max_new_tokens = 96
    c.train.micro_batch_size = 16
    return c
