"""jaxrl_reason.rollout: the jitted sampler (prefill + decode loop), groups and continuations."""

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
    "trace_count",
]
