"""jaxrl_reason.eval: evaluation metrics (pass@k, maj@k, distinct answers, best-of-N)."""

from jaxrl_reason.eval.metrics import (
    best_of_n,
    distinct_answers,
    maj_at_k,
    majority_vote,
    pass_at_k,
    summarize,
    weighted_majority_vote,
)

__all__ = [
    "best_of_n",
    "distinct_answers",
    "maj_at_k",
    "majority_vote",
    "pass_at_k",
    "summarize",
    "weighted_majority_vote",
]
