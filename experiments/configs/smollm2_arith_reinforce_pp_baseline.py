"""REINFORCE++-baseline (arXiv 2501.03262) on 2-digit sums: a group-mean baseline, then
whitening over the batch."""

from experiments.configs.smollm2_arith_reinforce_pp import get_config as reinforce_pp


def get_config():
    c = reinforce_pp()
    c.algo.estimator = "reinforce_pp_baseline"
    return c
