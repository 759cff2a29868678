"""GRPO on multi-hop search (Search-R1 style, arXiv 2503.09516): episodes of
``<search> query </search>`` calls answered with BM25 passages over the generated multi-hop
world (``task.name="multihop"``), then ``<answer> ... </answer>``; exact-match reward.

Episode layout and the rollout loop: ``jaxrl_reason/rollout/multiturn.py``. Held-out
evaluation runs one greedy episode per test question in the test sub-world's own corpus
(``Trainer.evaluate_episodes``: accuracy, turns, searches).
"""

from experiments.configs.common import base_config


def search_config():
    """The shared multi-hop search setup of the search configs (GRPO, GiGPO, IGPO)."""
    c = base_config()
    c.task.name = "multihop"
    c.task.hops = (2, 3)
    c.task.num_train = 0  # all questions of the train sub-world
    c.task.num_test = 100
    c.rollout.strategy = "env"
    c.rollout.env.name = "search"
    c.rollout.env.max_turns = 4  # 3 searches + the answer turn
    c.rollout.env.max_turn_tokens = 96
    c.rollout.env.max_obs_tokens = 160
    c.rollout.env.k = 3
    c.rollout.max_new_tokens = 640  # the whole episode: actions and observations
    c.rollout.temperature = 1.0
    c.eval_every = 10
    c.eval.num_prompts = 50
    return c


def get_config():
    c = search_config()
    c.algo.estimator = "grpo"
    return c
