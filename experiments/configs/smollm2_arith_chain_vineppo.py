"""VinePPO (Kazemnejad et al. 2024, arXiv 2410.01679): Monte Carlo step values from K
continuations of each step prefix, on arith_chain.

``rollout.strategy = "vine"`` samples the 8 responses per prompt, cuts them into the task's
steps (one per computed line) and estimates ``V(s_k)`` at every step start from
``rollout.vine.k`` continuations decoded from the response's KV cache (VinePPO uses K = 9; 4
here keeps a CPU step affordable). ``benchmarks/vine_cost.py`` prints what the vines cost.
"""

from experiments.configs.smollm2_arith_chain_grpo import get_config as chain_config


def get_config():
    c = chain_config()
    c.algo.estimator = "vineppo"
    c.rollout.strategy = "vine"
    c.rollout.vine.k = 4
    c.rollout.vine.which = "all"
    return c
