"""REINFORCE++ (Hu et al. 2025, arXiv 2501.03262) on 2-digit sums, and its group-baseline form.

``get_config()`` is REINFORCE++ (discounted returns whitened batch-wide, the KL penalty as a
loss term here); ``--config experiments/configs/smollm2_arith_reinforce_pp.py:baseline``
selects ``reinforce_pp_baseline`` (group-mean baseline, then batch whitening).
"""

from experiments.configs.common import base_config


def get_config(variant: str = ""):
    c = base_config()
    c.algo.estimator = "reinforce_pp_baseline" if variant == "baseline" else "reinforce_pp"
    c.loss.kl_coef = 0.001
    return c
