"""PRIME (Cui et al. 2025, arXiv 2502.01456) on arith_chain with the policy as its own implicit
PRM: token process rewards ``beta * (log pi - log pi_ref)`` from the behaviour log-probs and the
frozen reference, plus the outcome reward, with leave-one-out baselines (the paper's
advantage). A separately trained online PRM is a later addition (``process_rewards``).
"""

from experiments.configs.smollm2_arith_chain_grpo import get_config as chain_config


def get_config():
    c = chain_config()
    c.algo.estimator = "prime"
    c.algo.estimator_kwargs = {"beta": 0.05}
    return c
