"""Step scorers for search: the ``arith_chain`` oracle (the upper bound a learned PRM aims at),
an outcome scorer from a task's verifier, and a trained PRM."""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from typing import Any

import numpy as np

from jaxrl_reason.data.arith_chain import parse_steps, step_labels
from jaxrl_reason.rewards.extract import extract_hash

__all__ = ["arith_chain_oracle_scorer", "outcome_scorer", "prm_scorer"]


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


def prm_scorer(prm: Any, tokenizer: Any, task: Any, *, max_steps: int = 8, batch: int = 32):
    """``score_fn`` from a trained discriminative PRM (``experiments.train_prm``): the
    min over the response's steps of ``sigmoid(head(h at each step end))``, PURE's min-form
    value of a (partial) response (Cheng et al. 2025, arXiv 2504.15275; the same aggregate as
    the ``prm`` reward component). A text with no step yet scores 0.5.

    Each text is re-tokenised (prompt through the chat template, left-padded; response ids
    right-padded to a multiple of 32) and cut into steps by the task's rule
    (:func:`jaxrl_reason.rollout.steps.response_segment_ids`), so the scorer sees what the
    PRM saw in training. Rows go through in chunks of ``batch`` (padded: one compile per
    width).

    Args:
      prm: a :class:`jaxrl_reason.models.prm.PRM` (``load_prm``) sharing ``tokenizer``.
      task: the task (its prompts and ``split_steps``).
      max_steps: ``S`` of the PRM's step layout.

    Returns:
      ``score_fn(problems, texts) -> float32[N]`` in ``[0, 1]``.
    """
    from jaxrl_reason.rollout.chat import chat_prompt_ids
    from jaxrl_reason.rollout.sampler import left_pad
    from jaxrl_reason.rollout.steps import response_segment_ids

    pad = int(tokenizer.pad_token_id or 0)

    def score(problems: Sequence[Any], texts: Sequence[str]) -> np.ndarray:
        out = np.full(len(texts), 0.5, np.float32)
        for lo in range(0, len(texts), batch):
            ps, ts = list(problems[lo : lo + batch]), list(texts[lo : lo + batch])
            n = len(ts)
            prompts = chat_prompt_ids(tokenizer, task, ps)
            resp = [tokenizer.encode(t, add_special_tokens=False) for t in ts]
            lens = np.asarray([len(r) for r in resp])  # 0 for an empty text: no step
            resp = [r or [pad] for r in resp]
            # Pad rows to the chunk size and widths to buckets: a few compiles in all.
            prompts += [prompts[0]] * (batch - n)
            resp += [resp[0]] * (batch - n)
            lens = np.concatenate([lens, np.full(batch - n, lens[0])])
            pw = -(-max(len(p) for p in prompts) // 32) * 32
            rw = -(-max(len(r) for r in resp) // 32) * 32
            pt, pm = left_pad(prompts, pad, length=pw)
            rt = np.full((batch, rw), pad, np.int32)
            for i, r in enumerate(resp):
                rt[i, : len(r)] = r
            seg = response_segment_ids(
                tokenizer, rt, lens, rule="auto", task=task, max_steps=max_steps
            )
            s = prm.scores(pt, pm, rt, seg, max_steps)[:n]
            has = (seg[:n, None, :] == np.arange(max_steps)[None, :, None]).any(-1)
            mins = np.where(has, s, np.inf).min(-1)
            out[lo : lo + n] = np.where(has.any(-1), mins, 0.5)
        return out

    return score
