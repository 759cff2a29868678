"""Evaluation metrics that measure accuracy *and* diversity: pass@k, maj@k, distinct answers.

* ``pass_at_k``: the unbiased estimator of Chen et al. 2021 ("Evaluating Large Language Models
  Trained on Code", arXiv 2107.03374), in the numerically stable product form of the official
  ``human_eval.evaluation.estimate_pass_at_k``.
* ``maj_at_k``: majority vote over the *first* k samples, ties to the answer seen first (the
  convention of lm-evaluation-harness ``MajorityVoteFilter``/``take_first_k``, lighteval
  ``MajAtN`` and TTRL: ``Counter.most_common``). Not the subset-averaged estimator.
* ``distinct_answers``, ``best_of_n`` and ``summarize``.

Answers are hashable keys, normally canonical keys
(:func:`jaxrl_reason.rewards.canonical.canonical_key`) so that equivalent answers vote together.
These are host functions (numpy / Python), run on the outputs of evaluation sampling.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import numpy as np

__all__ = [
    "best_of_n",
    "distinct_answers",
    "maj_at_k",
    "majority_vote",
    "pass_at_k",
    "summarize",
    "weighted_majority_vote",
]


def _pass_at_k_one(n: int, c: int, k: int) -> float:
    if n - c < k:  # every size-k subset holds a correct sample
        return 1.0
    # 1 - C(n-c, k) / C(n, k) = 1 - prod_{i=n-c+1}^{n} (1 - k / i): no huge binomials.
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1, dtype=np.float64)))


def pass_at_k(n, c, k):
    """Unbiased pass@k, ``1 - C(n - c, k) / C(n, k)`` (Chen et al. 2021, eq. 1).

    Args:
      n: samples drawn per problem (int or integer array).
      c: correct samples among them (int or integer array, ``0 <= c <= n``).
      k: the k of pass@k (int or integer array, ``1 <= k <= n``). ``n``, ``c``, ``k``
        broadcast together.

    Returns:
      A Python ``float`` for scalar inputs, else a ``float64`` array of the broadcast shape.
      Average over problems yourself (``np.mean``).

    Raises:
      ValueError: when ``k > n``. The official code silently returns 1.0 there (even for
        ``c = 0``); sample at least ``k`` completions per problem or lower ``k``. Also for
        ``c`` outside ``[0, n]`` or ``k < 1``.
    """
    scalar = all(np.ndim(x) == 0 for x in (n, c, k))
    n_a, c_a, k_a = np.broadcast_arrays(np.asarray(n), np.asarray(c), np.asarray(k))
    for name, arr in (("n", n_a), ("c", c_a), ("k", k_a)):
        if arr.size and not np.all(np.equal(np.mod(arr, 1), 0)):
            raise ValueError(f"pass_at_k: {name} must hold integers, got {arr!r}")
    n_a, c_a, k_a = n_a.astype(np.int64), c_a.astype(np.int64), k_a.astype(np.int64)
    if np.any(k_a < 1):
        raise ValueError(f"pass_at_k: k must be >= 1, got k={k_a.min()}")
    if np.any(k_a > n_a):
        bad = np.argwhere(k_a > n_a)[0]
        raise ValueError(
            f"pass_at_k: k={k_a[tuple(bad)]} > n={n_a[tuple(bad)]} samples; the estimator needs "
            "n >= k: draw at least k samples per problem or lower k"
        )
    if np.any((c_a < 0) | (c_a > n_a)):
        raise ValueError("pass_at_k: c (correct samples) must lie in [0, n]")
    out = np.asarray(
        [
            _pass_at_k_one(int(a), int(b), int(d))
            for a, b, d in zip(n_a.ravel(), c_a.ravel(), k_a.ravel(), strict=True)
        ],
        dtype=np.float64,
    ).reshape(n_a.shape)
    return float(out) if scalar else out


def majority_vote(answers: Sequence[Hashable]) -> Hashable:
    """Most frequent answer; ties go to the one seen first (``Counter.most_common(1)``)."""
    if len(answers) == 0:
        raise ValueError("majority_vote: no answers to vote over")
    return Counter(answers).most_common(1)[0][0]


def weighted_majority_vote(answers: Sequence[Hashable], weights: Sequence[float]) -> Hashable:
    """Answer with the largest total weight; ties go to the one seen first.

    CRew's "SC+Reward" vote uses per-sample confidences normalised to sum to one over the
    samples; normalisation does not change the winner, so raw non-negative weights work too.
    """
    if len(answers) != len(weights) or len(answers) == 0:
        raise ValueError(
            f"weighted_majority_vote: {len(answers)} answers and {len(weights)} weights; "
            "pass one weight per answer (and at least one answer)"
        )
    totals: dict[Hashable, float] = {}
    for a, w in zip(answers, weights, strict=True):
        totals[a] = totals.get(a, 0.0) + float(w)
    return max(totals, key=totals.__getitem__)  # max keeps the first of equal totals


def _is_batch(answers) -> bool:
    return len(answers) > 0 and isinstance(answers[0], list | np.ndarray)


def maj_at_k(
    answers: Sequence[Hashable] | Sequence[Sequence[Hashable]],
    gold,
    k: int,
    *,
    equiv: Callable[[Any, Any], bool] | None = None,
) -> float:
    """maj@k: 1 if the majority of the first ``k`` answers equals ``gold`` (mean over prompts).

    Args:
      answers: one prompt's answers (a sequence of hashable keys), or a list of such lists
        (one per prompt; detected by the first element being a ``list`` / array).
      gold: the gold key, or one per prompt.
      k: votes per prompt; the *first* k samples vote (harness convention).
      equiv: optional ``equiv(majority, gold) -> bool`` (default ``==``); votes themselves
        compare keys exactly, so canonicalise first.

    Returns:
      float in ``[0, 1]``.
    """
    if _is_batch(answers):
        if len(gold) != len(answers):
            raise ValueError(
                f"maj_at_k: {len(answers)} prompts of answers but {len(gold)} gold answers"
            )
        return float(
            np.mean([maj_at_k(a, g, k, equiv=equiv) for a, g in zip(answers, gold, strict=True)])
        )
    if not 1 <= k <= len(answers):
        raise ValueError(
            f"maj_at_k: k={k} but only {len(answers)} answers; use 1 <= k <= n (sample more)"
        )
    winner = majority_vote(list(answers)[:k])
    ok = (winner == gold) if equiv is None else equiv(winner, gold)
    return float(bool(ok))


def distinct_answers(answers, *, exclude: Sequence[Hashable] = ()) -> float:
    """Number of distinct answers among one prompt's samples (mean over prompts for a batch).

    ``exclude`` drops keys before counting (e.g. ``(NONE_KEY,)`` to not count "no answer").
    Returns float.
    """
    if _is_batch(answers):
        return float(np.mean([distinct_answers(a, exclude=exclude) for a in answers]))
    return float(len(set(answers) - set(exclude)))


def best_of_n(scores, correct, n: int | None = None) -> float:
    """Best-of-N accuracy: correctness of the highest-scoring of the first ``n`` samples.

    Works under any scorer (verifier score, PRM, CRew confidence, self-certainty): pass its
    per-sample scores. Ties go to the earliest sample. Batch form: lists of lists (one per
    prompt) give the mean over prompts.

    Args:
      scores: ``[n_samples]`` floats (higher is better), or one such list per prompt.
      correct: ``[n_samples]`` bools, same layout.
      n: how many samples to choose among (default all).
    """
    if _is_batch(scores):
        return float(np.mean([best_of_n(s, c, n) for s, c in zip(scores, correct, strict=True)]))
    s = np.asarray(scores, np.float64)
    c = np.asarray(correct, bool)
    if s.shape != c.shape or s.ndim != 1:
        raise ValueError(f"best_of_n: scores {s.shape} and correct {c.shape} must be equal [n]")
    m = len(s) if n is None else n
    if not 1 <= m <= len(s):
        raise ValueError(f"best_of_n: n={m} but only {len(s)} samples")
    return float(c[int(np.argmax(s[:m]))])


def summarize(
    samples: Sequence[Sequence[tuple[Hashable, bool]]],
    *,
    ks: Sequence[int] | None = None,
    lengths: Sequence[Sequence[float]] | None = None,
    none_key: Hashable | None = "<none>",
) -> dict[str, float]:
    """Evaluation summary from per-prompt lists of ``(canonical answer, correct)``.

    maj@k needs no gold answer: the voted answer's correctness is that of its first sample
    (canonical keys are verifier-equivalence classes, so all samples of a key agree).

    Args:
      samples: one list of ``n`` pairs per prompt (``n`` may differ between prompts).
      ks: the k of pass@k / maj@k (default: powers of two up to the smallest ``n``). Every k
        must be ``<= min n``.
      lengths: optional per-prompt lists of response lengths.
      none_key: key of "no answer", excluded from ``distinct_answers`` (``None``: keep all).

    Returns:
      ``{"accuracy", "pass@k", "maj@k" for each k, "distinct_answers", "no_answer_rate",
      "mean_length" (when lengths given), "num_prompts", "n_min"}``: means over prompts;
      accuracy is the mean over all samples (= mean pass@1).
    """
    if len(samples) == 0:
        raise ValueError("summarize: no prompts")
    ns = [len(s) for s in samples]
    n_min = min(ns)
    if n_min < 1:
        raise ValueError("summarize: every prompt needs at least one sample")
    if ks is None:
        ks = [2**i for i in range(n_min.bit_length()) if 2**i <= n_min]
    for k in ks:
        if not 1 <= k <= n_min:
            raise ValueError(
                f"summarize: k={k} but a prompt has only {n_min} samples; use k <= {n_min}"
            )
    keys = [[a for a, _ in s] for s in samples]
    corr = [np.asarray([bool(c) for _, c in s]) for s in samples]
    out: dict[str, float] = {
        "num_prompts": float(len(samples)),
        "n_min": float(n_min),
        "accuracy": float(np.mean(np.concatenate(corr))),
    }
    counts = np.asarray([c.sum() for c in corr])
    for k in ks:
        out[f"pass@{k}"] = float(np.mean(pass_at_k(np.asarray(ns), counts, k)))
        votes = []
        for a, c in zip(keys, corr, strict=True):
            winner = majority_vote(a[:k])
            votes.append(float(c[a.index(winner)]))
        out[f"maj@{k}"] = float(np.mean(votes))
    excl = () if none_key is None else (none_key,)
    out["distinct_answers"] = float(np.mean([distinct_answers(a, exclude=excl) for a in keys]))
    if none_key is not None:
        out["no_answer_rate"] = float(np.mean([np.mean([x == none_key for x in a]) for a in keys]))
    if lengths is not None:
        out["mean_length"] = float(np.mean(np.concatenate([np.asarray(x, float) for x in lengths])))
    return out
