"""Credit assignment: advantage estimators as pure, jit-able array functions, by name.

``credit.get(name)`` returns an estimator; ``credit.register(name)`` adds one.
"""

from jaxrl_reason.credit.registry import get, names, register, unregister
from jaxrl_reason.credit.segments import (
    broadcast_segments,
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
    "get",
    "masked_mean",
    "masked_sum",
    "masked_var",
    "masked_whiten",
    "names",
    "register",
    "segment_ends",
    "segment_reduce",
    "segment_reduce_broadcast",
    "unregister",
]
