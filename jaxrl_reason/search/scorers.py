"""Step scorers for search: the ``arith_chain`` oracle (the upper bound a learned PRM aims at)
and an outcome scorer from a task's verifier."""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from typing import Any

import numpy as np

from jaxrl_reason.data.arith_chain import parse_steps, step_labels
from jaxrl_reason.rewards.extract import extract_hash

__all__ = ["arith_chain_oracle_scorer", "outcome_scorer"]


def _same_number(a: str, b: str) -> bool:
    try:
        return Fraction(a.replace(",", "").strip()) == Fraction(b.replace(",", "").strip())
    except (ValueError, ZeroDivisionError):
        return a.strip() == b.strip()


def arith_chain_oracle_scorer(mode: str = "fraction"):
    """The oracle step scorer of ``arith_chain`` (labels from ``ArithChainTask``'s gold
    steps, :func:`jaxrl_reason.data.arith_chain.step_labels`).

    For a partial response with ``n`` step lines (``parse_steps``) against ``S`` gold steps:

    * ``mode="fraction"``: ``(# right among the first min(n, S) steps) / n`` (steps beyond
      ``S`` count as wrong);
    * ``mode="all"``: 1.0 if every step so far is right (and ``n <= S``), else 0.0;

    a response with no step line yet scores 0.5 (nothing known), and one with a final
    ``#### answer`` line scores 0.0 when that answer is not the gold one.

    Returns:
      ``score_fn(problems, partial_texts) -> float32[N]`` (``problems[i].meta["steps"]``).
    """
    if mode not in ("fraction", "all"):
        raise ValueError(f"arith_chain_oracle_scorer: mode={mode!r}; use 'fraction' or 'all'")

    def score(problems: Sequence[Any], texts: Sequence[str]) -> np.ndarray:
        out = np.zeros(len(texts), np.float32)
        for i, (ex, text) in enumerate(zip(problems, texts, strict=True)):
            gold = list(ex.meta["steps"])
            n = len(parse_steps(text))
            if n == 0:
                s = 0.5
            else:
                right = float(step_labels(text, gold)[: min(n, len(gold))].sum())
                s = right / n if mode == "fraction" else float(right == n)
            final = extract_hash(text)
            if final is not None and not _same_number(final, str(ex.answer)):
                s = 0.0
            out[i] = s
        return out

    return score


def outcome_scorer(task: Any):
    """``score_fn`` = the task's verifier (1.0 right, 0.0 wrong) on each text: an outcome
    oracle for best-of-N (it sees the gold answer, so it is an upper bound too)."""

    def score(problems: Sequence[Any], texts: Sequence[str]) -> np.ndarray:
        return np.asarray(task.verify_batch(list(texts), list(problems)), np.float32)

    return score
