"""ProcessBench-style evaluation of step scorers (Zheng et al. 2024, arXiv 2412.06559).

A sample is a solution cut into steps ``0 .. n-1`` and its label, the index of the *earliest*
wrong step or -1 when every step is right. A scalar PRM predicts the first step whose score
falls below a threshold ``tau`` (-1 when none does; :func:`first_error_from_scores`). Then,
over the erroneous samples ``E`` (label != -1) and the correct ones ``C`` (label == -1)::

    acc_err = mean_{i in E} 1[pred_i == label_i]        (exact index match only)
    acc_cor = mean_{i in C} 1[pred_i == -1]
    F1      = 2 acc_err acc_cor / (acc_err + acc_cor)   (0 when both are 0)

(ProcessBench ``code/run_eval.py``; the paper reports percentages, these are fractions.)
Worked example: labels ``[2, 0, 3, 1, -1, -1, -1]``, predictions ``[2, 1, 3, -1, -1, 0, -1]``
give ``acc_err = 0.5``, ``acc_cor = 2/3`` and ``F1 = 4/7 = 0.571429``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["first_error_f1", "first_error_from_scores", "first_error_label"]


def first_error_from_scores(scores, valid, threshold: float = 0.5) -> np.ndarray:
    """Predicted first wrong step of each row: the first valid ``s`` with
    ``scores[b, s] < threshold``, else -1.

    Args:
      scores: ``float[B, S]`` step scores (probability the step is right).
      valid: ``bool[B, S]`` steps the response has.
      threshold: ``tau`` (ProcessBench leaves it to the evaluator; 0.5 by default).

    Returns: ``int32[B]``. Example: ``[0.9, 0.7, 0.3, 0.8]`` with ``tau = 0.5`` -> 2.
    """
    s = np.asarray(scores, np.float32)
    bad = (s < threshold) & np.asarray(valid, bool)
    return np.where(bad.any(-1), np.argmax(bad, -1), -1).astype(np.int32)


def first_error_label(labels, valid) -> np.ndarray:
    """The ground-truth first wrong step of each row from per-step labels (1 right, 0 wrong,
    soft labels below 0.5 count as wrong): ``float[B, S]``, ``bool[B, S]`` -> ``int32[B]``."""
    return first_error_from_scores(labels, valid, 0.5)


def first_error_f1(pred, label) -> dict[str, float]:
    """ProcessBench's accuracies and F1 over first-error indices.

    Args:
      pred, label: ``int[N]`` predicted / true first wrong step (-1 = no error).

    Returns: ``{"acc_err", "acc_cor", "f1", "num_err", "num_cor"}``; an accuracy over an empty
    set is 0 (so F1 is 0 unless both kinds of samples are present and some are matched).
    """
    pred = np.asarray(pred, np.int64)
    label = np.asarray(label, np.int64)
    if pred.shape != label.shape:
        raise ValueError(f"first_error_f1: pred {pred.shape} and label {label.shape} differ")
    err = label != -1
    acc_err = float(np.mean(pred[err] == label[err])) if err.any() else 0.0
    acc_cor = float(np.mean(pred[~err] == -1)) if (~err).any() else 0.0
    tot = acc_err + acc_cor
    return {
        "acc_err": acc_err,
        "acc_cor": acc_cor,
        "f1": 2 * acc_err * acc_cor / tot if tot > 0 else 0.0,
        "num_err": float(err.sum()),
        "num_cor": float((~err).sum()),
    }
