"""Tree-GRPO over agent steps (Ji et al. 2025, arXiv 2509.21240; TreePS-RAG) on multi-hop
search: 4 root episodes per question take their first action (a search) and read its
passages, then each forks its KV cache into 2 episodes that continue independently
(``rollout.env.branch_turn = 0``, ``branches = 2``: 8 leaves per question). ``tree_grpo``
normalises each leaf's reward against its question's leaves and against its own tree's.
"""

from experiments.configs.smollm2_search_grpo import search_config


def get_config():
    c = search_config()
    c.algo.estimator = "tree_grpo"
    c.rollout.env.branch_turn = 0
    c.rollout.env.branches = 2
    return c
