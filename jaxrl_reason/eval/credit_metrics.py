"""Does the credit land on the mistake? ``credit/first_error_hit`` against oracle step labels.

On a task whose every intermediate value is known (``arith_chain``:
:meth:`~jaxrl_reason.data.arith_chain.ArithChainTask.first_error_step`), a wrong response
has a first wrong step. A step-level estimator that assigns credit well should give that step
its lowest advantage; :func:`first_error_hit` measures how often it does, after the credit
phase, on the batch being trained on (host NumPy, no model).

Definitions (one row ``b``):

* eligible: the final answer is wrong (``correct[b] == 0``), the oracle's first wrong step
  ``e_b >= 0`` is known, and the response has a step ``min(e_b, S - 1)`` (steps past
  ``S - 1`` fold into it, as ``segment_id`` does). A first error at a step the response never
  wrote (a missing step) is not eligible: no token holds it.
* step means: ``a_k = mean(advantages[b, t])`` over tokens with ``segment_id[b, t] == k`` and
  ``mask[b, t] > 0`` (the mask the update trains on); steps without such a token are skipped.
* hit: ``argmin_k a_k == min(e_b, S - 1)``. **Ties go to the earliest step**: a step whose
  mean is within ``atol + rtol * |min|`` of the minimum counts as the minimum, and the
  earliest such step is the prediction. An outcome estimator (one advantage per response)
  ties every step, so it always predicts step 0: its hit rate is the "blame the first step"
  baseline that a process estimator has to beat. ``tied`` counts rows whose minimum is shared.
* ``credit/first_error_first_step``: that baseline on the same batch, whatever the estimator
  (the fraction of eligible rows whose first error is their earliest trained step), so that a
  process estimator's hit rate can be read against it step by step.
"""

from __future__ import annotations

import numpy as np

__all__ = ["first_error_hit", "step_mean_advantages"]


def step_mean_advantages(
    advantages: np.ndarray, mask: np.ndarray, segment_id: np.ndarray, num_steps: int
) -> tuple[np.ndarray, np.ndarray]:
    """Mean advantage of each step over its masked tokens.

    Args:
      advantages: float ``[B, R]``. mask: ``[B, R]`` (> 0 = counted). segment_id: int
        ``[B, R]`` (-1 and ids >= ``num_steps`` ignored). num_steps: ``S``.

    Returns:
      ``(means float64[B, S], has bool[B, S])``: ``means`` is 0 where ``has`` is False.
    """
    adv = np.asarray(advantages, np.float64)
    seg = np.asarray(segment_id)
    m = (np.asarray(mask) > 0) & (seg >= 0) & (seg < num_steps)
    b = adv.shape[0]
    rows = np.broadcast_to(np.arange(b)[:, None], seg.shape)
    sums = np.zeros((b, num_steps))
    counts = np.zeros((b, num_steps))
    np.add.at(sums, (rows[m], seg[m]), adv[m])
    np.add.at(counts, (rows[m], seg[m]), 1.0)
    has = counts > 0
    return np.where(has, sums / np.maximum(counts, 1.0), 0.0), has


def first_error_hit(
    advantages: np.ndarray,
    mask: np.ndarray,
    segment_id: np.ndarray,
    correct: np.ndarray,
    first_error: np.ndarray,
    *,
    num_steps: int,
    rtol: float = 1e-5,
    atol: float = 1e-6,
) -> dict[str, float]:
    """Fraction of wrong responses whose lowest-advantage step is the oracle's first wrong one.

    Args:
      advantages: float ``[B, R]`` after the credit phase.
      mask: ``[B, R]`` the tokens the update trains on (``update_mask`` or ``loss_mask``).
      segment_id: int ``[B, R]`` the task's steps (``rollout.step_rule="task"``), -1 padding.
      correct: ``[B]`` the verifier's outcome (0 = wrong).
      first_error: int ``[B]`` the oracle's first wrong step, -1 when unknown or none.
      num_steps: ``S`` (``rollout.max_steps``).
      rtol, atol: tie tolerance on step means (module docstring).

    Returns:
      ``{"credit/first_error_hit": hits / eligible (0 when none), "credit/first_error_n":
      eligible, "credit/first_error_tied": tied minima / eligible,
      "credit/first_error_first_step": the blame-the-first-step baseline / eligible}`` (host
      floats).
    """
    means, has = step_mean_advantages(advantages, mask, segment_id, num_steps)
    seg = np.asarray(segment_id)
    first = np.asarray(first_error)
    eligible = hits = tied = first_step = 0
    for b in range(means.shape[0]):
        if float(np.asarray(correct)[b]) != 0.0 or int(first[b]) < 0:
            continue
        target = min(int(first[b]), num_steps - 1)
        if not np.any(seg[b] == target):
            continue
        eligible += 1
        if not has[b].any():
            continue
        first_step += int(np.flatnonzero(has[b])[0] == target)
        lo = means[b][has[b]].min()
        at_min = has[b] & (means[b] <= lo + atol + rtol * abs(lo))
        tied += int(at_min.sum() > 1)
        hits += int(np.flatnonzero(at_min)[0] == target)
    return {
        "credit/first_error_hit": hits / eligible if eligible else 0.0,
        "credit/first_error_n": float(eligible),
        "credit/first_error_tied": tied / eligible if eligible else 0.0,
        "credit/first_error_first_step": first_step / eligible if eligible else 0.0,
    }
