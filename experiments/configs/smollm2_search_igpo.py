"""IGPO (arXiv 2510.14967) on multi-hop search: information-gain turn rewards, the change of
the policy's probability of the gold answer after each turn (``Trajectories.answer_probs``,
computed by the ``env`` strategy with one teacher-forced forward per batch), the answer's
exact match on the last turn.
"""

from experiments.configs.smollm2_search_grpo import search_config


def get_config():
    c = search_config()
    c.algo.estimator = "igpo"
    return c
