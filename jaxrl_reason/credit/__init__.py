"""Credit assignment: advantage estimators as pure, jit-able array functions, by name.

``credit.get(name)`` returns an estimator; ``credit.register(name)`` adds one.
"""

from jaxrl_reason.credit.outcome import (
    dr_grpo,
    gae,
    grpo,
    reinforce_pp,
    reinforce_pp_baseline,
    rloo,
    sequence_scores,
)
from jaxrl_reason.credit.registry import get, names, register, unregister
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

__all__ = [
    "broadcast_segments",
    "discounted_returns",
    "dr_grpo",
    "gae",
    "gae_scan",
    "get",
    "group_index",
    "group_moments",
    "grpo",
    "masked_mean",
    "masked_sum",
    "masked_var",
    "masked_whiten",
    "names",
    "register",
    "reinforce_pp",
    "reinforce_pp_baseline",
    "rloo",
    "segment_ends",
    "segment_reduce",
    "segment_reduce_broadcast",
    "sequence_scores",
    "unregister",
]
