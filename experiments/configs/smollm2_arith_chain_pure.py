"""PURE min-form credit (Cheng et al. 2025) on arith_chain, fed by oracle step scores.

Each computed line of a response is a step; ``reward.step_scorer = "oracle_steps"`` scores it
1 (right intermediate value) or 0 from the task's ground truth, and PURE's softmin transform
turns the scores into token rewards added to the verifiable reward (RLOO baseline). A
trained PRM replaces the oracle with ``--config.reward.step_scorer=prm
--config.prm.path=<dir>`` (a ``python -m experiments.train_prm`` checkpoint);
``--config.prof.n_remove=4`` adds PROF's consistency filter.
"""

from experiments.configs.smollm2_arith_chain_grpo import get_config as chain_config


def get_config():
    c = chain_config()
    c.algo.estimator = "pure"
    c.reward.step_scorer = "oracle_steps"
    return c
