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

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "StepBatch",
    "evaluate_prm",
    "first_error_f1",
    "first_error_from_scores",
    "first_error_label",
    "oracle_response_labels",
    "sample_step_batch",
]


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


# --------------------------------------------------------------------------------------------
# Oracle labels of sampled responses and the held-out evaluation of a PRM
# --------------------------------------------------------------------------------------------


def oracle_response_labels(
    task: Any, response: str, example: Any, num_steps: int
) -> tuple[np.ndarray, np.ndarray]:
    """Oracle labels of a response's *own* steps (the steps its ``segment_id`` numbers).

    ``task.step_labels`` labels the chain's true steps (missing ones wrong); here step ``k`` of
    the response gets the label of true step ``k``; steps beyond the chain are wrong (the chain
    is over, so the value they compute is not the answer); when the response has fewer steps
    than the chain, its last step is wrong (it stops short of the answer). A response with no
    step line is one wrong step (the segmentation makes it step 0). Steps beyond ``S =
    num_steps`` fold into step ``S - 1`` (the AND of their labels), as the step ids do. So
    ``first_error_label`` of these labels is -1 exactly when every step of the response is
    right and it reaches the final value.

    Returns: ``(labels float32[S] in {0, 1}, valid bool[S])``.
    """
    chain = np.asarray(task.step_labels(response, example), np.float32)
    n = max(len(task.split_steps(response)), 1)
    lab = np.zeros(n, np.float32)
    k = min(n, chain.size)
    lab[:k] = chain[:k]
    if n < chain.size:
        lab[n - 1] = 0.0
    out = np.zeros(num_steps, np.float32)
    m = min(n, num_steps)
    out[:m] = lab[:m]
    if n > num_steps:
        out[num_steps - 1] = lab[num_steps - 1 :].min()
    return out, np.arange(num_steps) < m


@dataclasses.dataclass
class StepBatch:
    """Sampled responses with their steps (host arrays; ``B`` rows).

    ``prompt_tokens int32[B, P]`` / ``prompt_mask bool[B, P]`` (left-padded chat prompts),
    ``tokens int32[B, R]``, ``lengths int32[B]``, ``segment_id int32[B, R]`` (-1 on padding),
    ``texts`` (decoded responses) and ``examples`` (each row's example).
    """

    prompt_tokens: np.ndarray
    prompt_mask: np.ndarray
    tokens: np.ndarray
    lengths: np.ndarray
    segment_id: np.ndarray
    texts: list[str]
    examples: list[Any]

    def rows(self, idx) -> StepBatch:
        """The rows ``idx`` (a new batch)."""
        idx = np.asarray(idx)
        return StepBatch(
            self.prompt_tokens[idx],
            self.prompt_mask[idx],
            self.tokens[idx],
            self.lengths[idx],
            self.segment_id[idx],
            [self.texts[i] for i in idx],
            [self.examples[i] for i in idx],
        )


def sample_step_batch(
    policy: Any,
    tokenizer: Any,
    task: Any,
    examples: Sequence[Any],
    key,
    sampling: Any,
    *,
    step_rule: str = "auto",
    num_steps: int = 8,
) -> StepBatch:
    """Samples ``sampling.n`` responses per example from ``policy`` (chat prompts, the
    rollout's sampler) and cuts them into steps with ``step_rule``
    (:func:`jaxrl_reason.rollout.steps.response_segment_ids`)."""
    from jaxrl_reason.rollout import left_pad, sample
    from jaxrl_reason.rollout.chat import chat_prompt_ids, decode_responses
    from jaxrl_reason.rollout.steps import response_segment_ids

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ptoks, pmask = left_pad(chat_prompt_ids(tokenizer, task, examples), pad)
    ro = sample(policy, ptoks, pmask, key, sampling)
    tokens, lengths = np.asarray(ro.tokens, np.int32), np.asarray(ro.lengths, np.int32)
    seg = response_segment_ids(
        tokenizer, tokens, lengths, rule=step_rule, task=task, max_steps=num_steps
    )
    return StepBatch(
        prompt_tokens=np.asarray(ro.prompt_tokens, np.int32),
        prompt_mask=np.asarray(ro.prompt_mask, bool),
        tokens=tokens,
        lengths=lengths,
        segment_id=seg,
        texts=decode_responses(tokenizer, tokens, lengths),
        examples=[examples[int(g)] for g in np.asarray(ro.group_ids)],
    )


def evaluate_prm(
    score_fn: Any,
    batch: StepBatch,
    task: Any,
    *,
    num_steps: int,
    threshold: float = 0.5,
    batch_size: int = 16,
) -> dict[str, float]:
    """Held-out first-error F1 of a step scorer on sampled responses with oracle labels.

    Args:
      score_fn: ``(prompt_tokens, prompt_mask, tokens, segment_id) -> float[b, S]`` step
        scores (e.g. :meth:`jaxrl_reason.models.prm.PRM.scores` with ``num_steps`` bound).
      batch: a :class:`StepBatch` of a task with oracle step labels (``arith_chain``).
      threshold: ``tau`` of :func:`first_error_from_scores`.

    Returns: :func:`first_error_f1`'s dict plus ``step_acc`` (accuracy of ``score >= tau``
    against the step labels over valid steps) and ``num_samples``.
    """
    n = len(batch.texts)
    labels = np.zeros((n, num_steps), np.float32)
    valid = np.zeros((n, num_steps), bool)
    for i, (text, ex) in enumerate(zip(batch.texts, batch.examples, strict=True)):
        labels[i], valid[i] = oracle_response_labels(task, text, ex, num_steps)
    scores = np.concatenate(
        [
            np.asarray(
                score_fn(
                    batch.prompt_tokens[i : i + batch_size],
                    batch.prompt_mask[i : i + batch_size],
                    batch.tokens[i : i + batch_size],
                    batch.segment_id[i : i + batch_size],
                ),
                np.float32,
            )
            for i in range(0, n, batch_size)
        ]
    )
    # Rows without any step (empty responses) have no step scores: the scorer sees nothing.
    pred = first_error_from_scores(scores, valid, threshold)
    out = first_error_f1(pred, first_error_label(labels, valid))
    right = (scores >= threshold) == (labels >= 0.5)
    out["step_acc"] = float(right[valid].mean()) if valid.any() else 0.0
    out["num_samples"] = float(n)
    return out
