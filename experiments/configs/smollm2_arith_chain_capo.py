"""CAPO (Xie et al. 2025) on arith_chain with an oracle judge: one verdict per step (wrong or
not) from the task's ground truth, turned into token penalties ``r_v W_whole - W_process`` on
the wrong steps' tokens and group-normalised. ``--config.reward.step_scorer=judge`` switches
to CAPO's generative judge (the policy itself, or ``--config.judge.path=<hf dir>``;
``judge.num_judgements`` critiques).
"""

from experiments.configs.smollm2_arith_chain_grpo import get_config as chain_config


def get_config():
    c = chain_config()
    c.algo.estimator = "capo"
    c.reward.step_scorer = "oracle_steps"
    return c
