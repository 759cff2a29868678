"""SPO-tree (Guo et al. 2025) on arith_chain with forks at reasoning-step ends.

The segment tree of ``smollm2_arith_chain_spo_tree`` (2 children per node at depths 0, 1, 2:
8 leaves per prompt), but each segment ends where a step ends (``rollout.tree.fork_at =
"steps"``): decoding stops at the first token whose text holds a newline (arith_chain asks
for one equation per line, so a segment is one equation) or at end of turn, and the node
forks there. ``segment_len = 32`` caps a segment (a longer step is cut there): with the
SmolLM2 tokenizer ``"7 + 1 = 8\n"`` is 8 tokens and ``"Start with 7. 7 + 1 = 8.\n"`` 15, so
an equation line fits. The tokenizer has 129 newline-holding ids; it encodes a blank line
``"\n\n"`` as two ``"\n"`` tokens, so a blank line is a one-token segment of its own. The
subtree-value advantages then score whole steps, as the task's oracle step labels do.
"""

from experiments.configs.smollm2_arith_chain_grpo import get_config as chain_config


def get_config():
    c = chain_config()
    c.algo.estimator = "spo_tree"
    c.rollout.strategy = "tree"
    c.rollout.tree.mode = "segment"
    c.rollout.tree.fork_at = "steps"
    c.rollout.tree.segment_len = 32
    c.rollout.tree.branching = (2, 2, 2)
    c.rollout.n_samples = 8
    return c
