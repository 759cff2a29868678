"""Self-training and preference data on the host: what the update of ``algo.objective="sft"``
(STaR / RAFT) and ``algo.objective="dpo"`` trains on, built from a step's scored rollouts.

The trainer keeps its phases (rollout -> score -> [credit] -> update); only the update's batch
changes. The verifier's outcome ``correct float32[B]`` (``phases.Scored.correct``, the score
phase's one route for correctness) selects what is kept:

STaR (Zelikman et al. 2022, arXiv 2203.14465) / RAFT (Dong et al. 2023, arXiv 2304.06767)::

    keep[b]   = correct[b] > 0                                   (rejection sampling)
    failed    = groups (prompts) with no kept row
    rational. = the failed prompts re-sampled with the answer as a hint in the prompt
                (``star.hint_template``, e.g. "(The answer is {answer}.)"); the verified ones are
                kept WITH THE ORIGINAL, hint-free prompt (STaR's ``p_show_hint_save = 0``)
    L_SFT     = agg(-log pi(y_t | x, y_<t), mask of the kept rows)

Worked example (the research notes' STaR iteration): 4 prompts, one sample each; q1 right; q2
wrong, right with the hint (kept, saved without the hint); q3 wrong twice (dropped); q4 right
-> 3 kept rows, 1 of them rationalised.

DPO pairs from the batch itself (``dpo.pairs = "self"``; the pair builder of VinePPO's
``MATHDPOPositiveEpisodeGenerator``): per prompt group, accepted ``A = {correct}`` and rejected
``R = {not correct}``; a group without both gives no pair; otherwise ``min(|A| |R|, n // 2)``
pairs ``(A[i], R[(i + d) % |R|])`` with ``i = k % |A|``, ``d = k // |A|``, ``k = 0, 1, ...``
(the cross pairs diagonal by diagonal: distinct, and each row is used about equally).
``n // 2`` per group keeps the pair rows within the batch's row count, so a step's DPO update
has at most as many rows as its RL update would. Example: ``correct = [1, 0, 1, 0, 0, 1]``
(one group, ``n = 6``) -> ``A = [0, 2, 5]``, ``R = [1, 3, 4]`` -> pairs ``(0, 1), (2, 3),
(5, 4)``.

Shapes stay fixed per step: the kept rows (pairs) are shuffled, packed first and padded up to
whole mini-batches with weight-0 rows (pairs), so a mini-batch holds no padding unless it is
the step's last, and a step with nothing kept runs no update at all.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from jaxrl_reason.rollout.trajectories import Trajectories

__all__ = [
    "DPO_PAIR_SOURCES",
    "dpo_minibatches",
    "failed_groups",
    "hinted_examples",
    "load_pair_records",
    "self_pairs",
    "sft_minibatches",
    "star_rows",
    "tokenize_pairs",
]

#: ``dpo.pairs`` values: pairs from the batch's own samples, or from ``dpo.pairs_path``.
DPO_PAIR_SOURCES: tuple[str, ...] = ("self", "file")


def failed_groups(correct: np.ndarray, group_id: np.ndarray, num_groups: int) -> np.ndarray:
    """``int64[G']`` ids (ascending) of the groups in ``range(num_groups)`` with no row
    ``correct > 0`` (``correct float32[B]``, ``group_id int32[B]``): STaR's failed prompts."""
    ok = np.zeros(num_groups, bool)
    np.logical_or.at(ok, np.asarray(group_id), np.asarray(correct) > 0)
    return np.nonzero(~ok)[0]


def hinted_examples(examples: Sequence[Any], groups: Sequence[int], template: str) -> list[Any]:
    """The examples of ``groups`` with STaR's hint appended to the user prompt:
    ``prompt + " " + template.format(answer=example.answer)`` (GSM8K in STaR: the answer in
    parentheses after the question)."""
    out = []
    for g in groups:
        ex = examples[int(g)]
        hint = template.format(answer=ex.answer)
        out.append(dataclasses.replace(ex, prompt=f"{ex.prompt} {hint}"))
    return out


def star_rows(
    traj: Trajectories,
    correct: np.ndarray,
    rationalized: Trajectories | None = None,
    rationalized_correct: np.ndarray | None = None,
    rationalized_groups: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """STaR's kept data of one step, as host arrays of the SFT update.

    Args:
      traj: the step's scored rollouts (``B`` rows, prompt width ``P``, response width ``R``).
      correct: ``float32[B]`` the verifier's outcomes of ``traj``.
      rationalized: the hinted re-samples of the failed prompts (``B'`` rows, response width
        ``R``; their own, longer prompts are dropped).
      rationalized_correct: ``float32[B']`` their outcomes (against the original answers).
      rationalized_groups: ``int[G']`` the ``traj`` group of each hinted prompt: hinted prompt
        ``k`` (``rationalized.group_id == k``) re-samples ``traj`` group
        ``rationalized_groups[k]``.

    Returns:
      ``{"prompt_tokens" int32[K, P], "prompt_mask" bool[K, P], "response" int32[K, R],
      "sft_mask" float32[K, R], "rationalized" bool[K]}``: the ``K`` kept rows (verified, with
      a non-empty ``loss_mask``), first those of ``traj`` (in row order), then the kept
      rationalisations, each with the hint-free prompt of its group (any row of the group
      carries it) and its ``loss_mask``.
    """
    # A row whose loss mask is empty (PROF's dropped rows, DAPO's filler groups) has nothing
    # to imitate.
    keep = (np.asarray(correct) > 0) & np.asarray(traj.loss_mask).any(-1)
    prompt = [np.asarray(traj.prompt_tokens)[keep]]
    pmask = [np.asarray(traj.prompt_mask)[keep]]
    resp = [np.asarray(traj.tokens)[keep]]
    mask = [np.asarray(traj.loss_mask, np.float32)[keep]]
    rat = [np.zeros(int(keep.sum()), bool)]
    if rationalized is not None and len(rationalized_groups):
        rkeep = (np.asarray(rationalized_correct) > 0) & np.asarray(rationalized.loss_mask).any(-1)
        src_group = np.asarray(rationalized_groups)[np.asarray(rationalized.group_id)][rkeep]
        gid = np.asarray(traj.group_id)
        first_row = {int(g): int(np.nonzero(gid == g)[0][0]) for g in np.unique(src_group)}
        rows = np.array([first_row[int(g)] for g in src_group], np.int64)
        prompt.append(np.asarray(traj.prompt_tokens)[rows])
        pmask.append(np.asarray(traj.prompt_mask)[rows])
        resp.append(np.asarray(rationalized.tokens)[rkeep])
        mask.append(np.asarray(rationalized.loss_mask, np.float32)[rkeep])
        rat.append(np.ones(int(rkeep.sum()), bool))
    return {
        "prompt_tokens": np.concatenate(prompt).astype(np.int32),
        "prompt_mask": np.concatenate(pmask).astype(bool),
        "response": np.concatenate(resp).astype(np.int32),
        "sft_mask": np.concatenate(mask).astype(np.float32),
        "rationalized": np.concatenate(rat),
    }


def _pad_rows(data: dict[str, np.ndarray], order: np.ndarray, size: int) -> list[np.ndarray]:
    """``order`` cut into chunks of ``size`` indices, the last padded with index ``order[0]``
    (its weight is zeroed by the caller)."""
    n = len(order)
    total = -(-n // size) * size
    padded = np.concatenate([order, np.full(total - n, order[0], order.dtype)])
    return [padded[i : i + size] for i in range(0, total, size)]


def sft_minibatches(
    rows: dict[str, np.ndarray], mini_batch_size: int, rng: np.random.Generator | None
) -> list[dict[str, np.ndarray]]:
    """The SFT update's mini-batches of :func:`star_rows`' kept rows: shuffled (``rng``; None
    keeps the order), cut into ``mini_batch_size`` rows, the last one padded with rows whose
    ``sft_mask`` is 0. ``[]`` when nothing is kept. Each batch has ``prompt_tokens``,
    ``prompt_mask``, ``response``, ``sft_mask`` (the :func:`train.step.sft_objective_loss`
    layout)."""
    n = len(rows["sft_mask"])
    if n == 0:
        return []
    order = rng.permutation(n) if rng is not None else np.arange(n)
    out = []
    for i, idx in enumerate(_pad_rows(rows, order, mini_batch_size)):
        real = np.ones(len(idx), np.float32)
        if i == -(-n // mini_batch_size) - 1:
            real[n - i * mini_batch_size :] = 0.0
        out.append(
            {
                "prompt_tokens": rows["prompt_tokens"][idx],
                "prompt_mask": rows["prompt_mask"][idx],
                "response": rows["response"][idx],
                "sft_mask": rows["sft_mask"][idx] * real[:, None],
            }
        )
    return out


def self_pairs(
    correct: np.ndarray,
    group_id: np.ndarray,
    n_per_group: int,
    valid: np.ndarray | None = None,
) -> np.ndarray:
    """DPO pairs from each prompt group's own samples (module docstring).

    Args:
      correct: ``float32[B]`` the verifier's outcomes (``> 0``: accepted).
      group_id: ``int[B]`` each row's prompt group.
      n_per_group: ``n``, the samples per prompt; at most ``n // 2`` pairs per group.
      valid: ``bool[B]`` rows that may be paired (default all); the trainer passes rows with a
        non-empty ``loss_mask`` (PROF's dropped rows and DAPO's filler groups are neither
        chosen nor rejected).

    Returns:
      ``int64[K, 2]`` row indices ``(chosen, rejected)``, groups in ascending id order.
    """
    correct = np.asarray(correct) > 0
    gid = np.asarray(group_id)
    if valid is not None:
        gid = np.where(np.asarray(valid, bool), gid, -1)  # group -1: never paired
    cap = max(int(n_per_group) // 2, 1)
    pairs = []
    for g in np.unique(gid[gid >= 0]):
        rows = np.nonzero(gid == g)[0]
        acc, rej = rows[correct[rows]], rows[~correct[rows]]
        if not len(acc) or not len(rej):
            continue
        for k in range(min(len(acc) * len(rej), cap)):
            # Diagonal d pairs A[i] with R[i + d]: for a fixed i, the d < |R| are distinct.
            i, d = k % len(acc), k // len(acc)
            pairs.append((acc[i], rej[(i + d) % len(rej)]))
    return np.asarray(pairs, np.int64).reshape(-1, 2)


def dpo_minibatches(
    data: dict[str, np.ndarray],
    pairs: np.ndarray,
    mini_batch_size: int,
    rng: np.random.Generator | None,
) -> list[dict[str, np.ndarray]]:
    """The DPO update's mini-batches: pairs (rows of ``data``) shuffled, interleaved
    ``[chosen_0, rejected_0, chosen_1, ...]`` (the :func:`train.step.dpo_objective_loss`
    layout), ``mini_batch_size // 2`` pairs per mini-batch, the last padded with weight-0
    pairs.

    ``data``: ``prompt_tokens``, ``prompt_mask``, ``response``, ``response_mask``,
    ``ref_logprobs`` (rows indexed by ``pairs int[K, 2]``). ``pair_weight`` is
    ``slots / real_pairs`` on every real pair of a mini-batch with ``slots = mini_batch_size //
    2`` pair slots (0 on padding), so that averaging the micro-batches' weighted means gives the
    plain mean over the mini-batch's real pairs. ``[]`` when there are no pairs.
    """
    k = len(pairs)
    if k == 0:
        return []
    slots = mini_batch_size // 2
    order = rng.permutation(k) if rng is not None else np.arange(k)
    out = []
    for i, idx in enumerate(_pad_rows(data, order, slots)):
        real = min(slots, k - i * slots)
        w = np.zeros(slots, np.float32)
        w[:real] = slots / real
        rows = pairs[idx].reshape(-1)  # chosen, rejected, chosen, ...
        batch = {
            key: data[key][rows]
            for key in ("prompt_tokens", "prompt_mask", "response", "response_mask", "ref_logprobs")
        }
        batch["pair_weight"] = np.repeat(w, 2)
        out.append(batch)
    return out


def load_pair_records(path: str) -> list[dict[str, str]]:
    """Reads a JSONL file of preference pairs, one ``{"prompt", "chosen", "rejected"}`` object
    a line (strings; blank lines skipped). ``ValueError`` names the line of a bad record."""
    if not os.path.isfile(path):
        raise ValueError(f"dpo.pairs_path={path!r}: no such file")
    out = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{i}: not JSON ({e.msg})") from None
            if not isinstance(rec, dict) or not all(
                isinstance(rec.get(k), str) for k in ("prompt", "chosen", "rejected")
            ):
                raise ValueError(
                    f"{path}:{i}: a pair is {{'prompt': str, 'chosen': str, 'rejected': str}}"
                )
            out.append({k: rec[k] for k in ("prompt", "chosen", "rejected")})
    if not out:
        raise ValueError(f"dpo.pairs_path={path!r}: the file holds no pairs")
    return out


def tokenize_pairs(
    tokenizer: Any,
    task: Any,
    records: Sequence[dict[str, str]],
    max_new_tokens: int,
    *,
    bucket: int = 16,
) -> dict[str, np.ndarray]:
    """Preference records as interleaved model rows ``[chosen_0, rejected_0, ...]``.

    The prompt goes through the task's chat prompt (:meth:`Task.build_prompt`: system turn
    and template as the rollout prompts; generation prompt added), left-padded to a multiple of
    ``bucket``; each response is ``encode(text) + [eos]`` (the end of the assistant turn, as a
    sampled response ends), right-padded (or cut) to ``max_new_tokens``.

    Returns ``prompt_tokens int32[2N, P]``, ``prompt_mask bool[2N, P]``, ``response int32[2N,
    R]``, ``response_mask float32[2N, R]`` and ``pairs int64[N, 2]`` (``[[0, 1], [2, 3],
    ...]``, the :func:`dpo_minibatches` index of each record).
    """
    from jaxrl_reason.data.base import Example
    from jaxrl_reason.rollout.chat import chat_prompt_ids
    from jaxrl_reason.rollout.sampler import left_pad

    examples = [
        Example(id=f"pair/{i}", prompt=r["prompt"], answer="") for i, r in enumerate(records)
    ]
    prompts = chat_prompt_ids(tokenizer, task, examples)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    width = -(-max(len(p) for p in prompts) // bucket) * bucket
    ptok, pmask = left_pad([p for p in prompts for _ in (0, 1)], pad)
    if ptok.shape[1] < width:  # widen to the bucket (fewer recompiles)
        extra = width - ptok.shape[1]
        ptok = np.concatenate([np.full((len(ptok), extra), pad, ptok.dtype), ptok], 1)
        pmask = np.concatenate([np.zeros((len(pmask), extra), bool), pmask], 1)
    eos = tokenizer.eos_token_id
    resp = np.full((2 * len(records), max_new_tokens), pad, np.int32)
    rmask = np.zeros((2 * len(records), max_new_tokens), np.float32)
    for i, r in enumerate(records):
        for j, text in enumerate((r["chosen"], r["rejected"])):
            ids = list(tokenizer.encode(text, add_special_tokens=False))
            ids = (ids + ([eos] if eos is not None else []))[:max_new_tokens]
            resp[2 * i + j, : len(ids)] = ids
            rmask[2 * i + j, : len(ids)] = 1.0
    return {
        "prompt_tokens": np.asarray(ptok, np.int32),
        "prompt_mask": np.asarray(pmask, bool),
        "response": resp,
        "response_mask": rmask,
        "pairs": np.arange(2 * len(records), dtype=np.int64).reshape(-1, 2),
    }
