"""Dr.GRPO (Liu et al. 2025, arXiv 2503.20783) on 2-digit sums: GRPO without the std division,
with the ``seq-mean-token-sum-norm`` aggregation (no per-length normalisation)."""

from experiments.configs.common import base_config


def get_config():
    c = base_config()
    c.algo.estimator = "dr_grpo"
    c.loss.agg_mode = "seq-mean-token-sum-norm"
    return c
