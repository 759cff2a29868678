"""jaxrl_reason.rollout: the jitted sampler (prefill + decode loop), groups and continuations,
decoding sessions (:mod:`.session`), tree rollouts (:mod:`.tree`) and Monte Carlo vines
(:mod:`.vine`)."""

# Registers rollout.strategy = "tree" and "vine" (strategies register on import).
from jaxrl_reason.rollout import session, tree, vine
from jaxrl_reason.rollout.sampler import (
    Rollout,
    SamplingConfig,
    bucket_length,
    left_pad,
    sample,
    sample_on_mesh,
    sample_token,
    trace_count,
)

__all__ = [
    "Rollout",
    "SamplingConfig",
    "bucket_length",
    "left_pad",
    "sample",
    "sample_on_mesh",
    "sample_token",
    "session",
    "trace_count",
    "tree",
    "vine",
]
