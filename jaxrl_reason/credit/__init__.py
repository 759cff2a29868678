"""Credit assignment: advantage estimators as pure, jit-able array functions, by name.

``credit.get(name)`` returns an estimator; ``credit.register(name)`` adds one.
"""

# Importing the method modules registers their estimators (prime, pure, vineppo, spo_chain,
# capo, treerl, spo_tree, sibling_grpo, tree_grpo, gigpo, igpo).
from jaxrl_reason.credit import agents, mc, process, trees  # noqa: F401
from jaxrl_reason.credit.agents import gigpo_step_advantages, igpo_turn_rewards
from jaxrl_reason.credit.mc import fill_unestimated_values, mc_step_advantages, spo_prob_mask
from jaxrl_reason.credit.outcome import (
    dr_grpo,
    gae,
    grpo,
    reinforce_pp,
    reinforce_pp_baseline,
    rloo,
    sequence_scores,
)
from jaxrl_reason.credit.process import (
    capo_token_rewards,
    capo_vote,
    implicit_prm_loss,
    implicit_process_rewards,
    implicit_step_rewards,
    min_form_returns,
    pure_transform,
)
from jaxrl_reason.credit.registry import (
    get,
    inputs,
    loss_mask_fn,
    names,
    optional_inputs,
    register,
    unregister,
)
from jaxrl_reason.credit.scans import discounted_returns, gae_scan
from jaxrl_reason.credit.segments import (
    broadcast_segments,
    group_index,
    group_moments,
    masked_mean,
    masked_sum,
    masked_var,
    masked_whiten,
    segment_ends,
    segment_reduce,
    segment_reduce_broadcast,
)
from jaxrl_reason.credit.trees import (
    ancestor_matrix,
    flatten_forests,
    node_depth,
    node_root,
    sibling_node_advantages,
    spo_tree_node_advantages,
    subtree_sum,
    tree_values,
    treerl_node_advantages,
)

__all__ = [
    "ancestor_matrix",
    "broadcast_segments",
    "capo_token_rewards",
    "capo_vote",
    "discounted_returns",
    "dr_grpo",
    "fill_unestimated_values",
    "flatten_forests",
    "gae",
    "gae_scan",
    "get",
    "gigpo_step_advantages",
    "group_index",
    "group_moments",
    "grpo",
    "igpo_turn_rewards",
    "inputs",
    "implicit_prm_loss",
    "loss_mask_fn",
    "implicit_process_rewards",
    "implicit_step_rewards",
    "masked_mean",
    "masked_sum",
    "masked_var",
    "masked_whiten",
    "mc_step_advantages",
    "min_form_returns",
    "names",
    "node_depth",
    "node_root",
    "optional_inputs",
    "pure_transform",
    "register",
    "reinforce_pp",
    "reinforce_pp_baseline",
    "rloo",
    "segment_ends",
    "segment_reduce",
    "segment_reduce_broadcast",
    "sequence_scores",
    "sibling_node_advantages",
    "spo_prob_mask",
    "spo_tree_node_advantages",
    "subtree_sum",
    "tree_values",
    "treerl_node_advantages",
    "unregister",
]
