"""SPO-chain (Guo et al. 2025, arXiv 2505.23564): segment advantages from Monte Carlo values at
probability cut points, on arith_chain.

``rollout.strategy = "vine"`` with ``rollout.vine.which = "spo_cut"``: segments end at every
``interval``-th token with ``p < rho`` (SPO's ``int5``, rho 0.9; ``segment_id`` holds these
segments), ``V`` at each cut from ``rollout.vine.k`` continuations (SPO: 9 on GSM8K, 4 on
MATH). The estimator's ``prob_mask`` trains only on tokens with ``p < rho``
(``Trajectories.update_mask``).
"""

from experiments.configs.smollm2_arith_chain_grpo import get_config as chain_config


def get_config():
    c = chain_config()
    c.algo.estimator = "spo_chain"
    c.rollout.strategy = "vine"
    c.rollout.vine.which = "spo_cut"
    c.rollout.vine.k = 4
    c.rollout.vine.rho = 0.9
    c.rollout.vine.interval = 5
    return c
