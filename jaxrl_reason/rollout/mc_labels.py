"""Math-Shepherd Monte Carlo step labels from KV-cache sessions (Wang et al. 2023, arXiv
2312.08935, section 3.3, eqs. 3-4).

For a response cut into steps ``0 .. n-1``, the prefix that ends with step ``k`` is continued
``K`` times by the policy (the "completer"); ``hit[k, j] = 1`` when continuation ``j`` reaches
the right final answer. Then::

    hard (HE, eq. 3): y_k = max_j hit[k, j]      (any continuation reaches the answer)
    soft (SE, eq. 4): y_k = mean_j hit[k, j]     (the fraction that does)

The last step's prefix is the whole response, so its label is the response's own outcome (no
continuation is sampled; Math-Shepherd's definition read literally, noted as an inference in
the design notes). Worked example: ``K = 4``, correct continuations ``[3, 1, 0]`` give
``y_HE = [1, 1, 0]`` and ``y_SE = [0.75, 0.25, 0]``.

Decoding (:mod:`jaxrl_reason.rollout.session`): the prompts are prefilled once; step ``k``'s
tokens are teacher-forced into the session (:func:`~jaxrl_reason.rollout.session.extend`),
the rows that continue are forked ``K`` times and continued
(:func:`~jaxrl_reason.rollout.session.generate`), and the main session goes on to step
``k + 1``: no prefix is ever prefilled twice.

Keys: continuation ``j`` of step ``k`` of row ``b`` draws its ``t``-th token with
``fold_in(fold_in(step_key(key, b, k), j), t)``, where ``step_key = fold_in(fold_in(key, b),
k)``, i.e. exactly the draws of ``sample(model, [prompt_b + prefix_{b,k}], [step_key], cfg
with n = K)`` (tested). Self-contained on purpose: a ``vine`` rollout strategy estimates step
values the same way, separately.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import jax
import numpy as np

from jaxrl_reason.rollout import session as sess_lib
from jaxrl_reason.rollout.sampler import SamplingConfig

__all__ = ["MCLabels", "mc_step_labels", "step_key"]


@dataclasses.dataclass
class MCLabels:
    """Monte Carlo step labels of ``B`` responses (host arrays).

    Attributes:
      hard: ``float32[B, S]`` HE labels (1 if any continuation is correct).
      soft: ``float32[B, S]`` SE labels (fraction of correct continuations).
      valid: ``bool[B, S]`` steps the response has.
      continuations: ``{(b, k): int32[K, max_new_tokens]}`` sampled continuation tokens
        (padded with the pad id after each one stops), for inspection and tests.
      lengths: ``{(b, k): int32[K]}`` continuation lengths.
    """

    hard: np.ndarray
    soft: np.ndarray
    valid: np.ndarray
    continuations: dict[tuple[int, int], np.ndarray]
    lengths: dict[tuple[int, int], np.ndarray]


def step_key(key: jax.Array, row: int, step: int) -> jax.Array:
    """The prompt key of row ``row``'s step-``step`` continuations: ``fold_in(fold_in(key,
    row), step)``."""
    return jax.random.fold_in(jax.random.fold_in(key, row), step)


def mc_step_labels(
    model,
    prompt_tokens: np.ndarray,
    prompt_mask: np.ndarray,
    response: np.ndarray,
    segment_id: np.ndarray,
    lengths: np.ndarray,
    key: jax.Array,
    cfg: SamplingConfig,
    *,
    num_rollouts: int,
    num_steps: int,
    correct_fn: Callable[[Sequence[int], Sequence[Sequence[int]]], np.ndarray],
) -> MCLabels:
    """Math-Shepherd MC labels of every step of ``B`` responses (module doc).

    Args:
      model: the completer (normally the policy), a ``Transformer``.
      prompt_tokens: ``int32[B, P]`` left-padded chat prompts; ``prompt_mask`` ``bool[B, P]``.
      response: ``int32[B, R]`` responses (right-padded); ``lengths`` ``int[B]``.
      segment_id: ``int32[B, R]`` step ids (-1 on padding), e.g. from
        :func:`~jaxrl_reason.rollout.steps.response_segment_ids`.
      key: the batch key (see the module doc for the schedule).
      cfg: sampling of the continuations (``max_new_tokens``, temperature, stop ids; ``n`` is
        ignored: ``num_rollouts`` is ``K``).
      num_rollouts: ``K`` continuations per step (Math-Shepherd: 8).
      num_steps: ``S``, the width of the outputs.
      correct_fn: ``(rows, token_lists) -> float[len(rows)]``: whether the full response
        tokens ``token_lists[i]`` (prefix + continuation) of row ``rows[i]`` reach the right
        answer (the task's verifier on the decoded text).

    Returns: :class:`MCLabels`.
    """
    prompt_tokens = np.asarray(prompt_tokens, np.int32)
    prompt_mask = np.asarray(prompt_mask, bool)
    response = np.asarray(response, np.int32)
    seg = np.asarray(segment_id, np.int32)
    lengths = np.asarray(lengths)
    b, p = prompt_tokens.shape
    k_rep = int(num_rollouts)
    n_steps = np.where(lengths > 0, seg.max(-1) + 1, 0)  # steps per row
    valid = np.arange(num_steps)[None, :] < np.minimum(n_steps, num_steps)[:, None]
    hits = np.zeros((b, num_steps), np.float32)
    any_hit = np.zeros((b, num_steps), np.float32)
    conts: dict[tuple[int, int], np.ndarray] = {}
    cont_lens: dict[tuple[int, int], np.ndarray] = {}

    # The last step of each row is labelled with the row's own outcome.
    rows_all = [i for i in range(b) if n_steps[i] > 0]
    if rows_all:
        outcome = np.asarray(
            correct_fn(rows_all, [response[i, : lengths[i]].tolist() for i in rows_all]),
            np.float32,
        )
        for i, o in zip(rows_all, outcome, strict=True):
            last = min(int(n_steps[i]), num_steps) - 1
            hits[i, last] = any_hit[i, last] = o

    # Column window of each step (steps beyond S are folded into S - 1 by the step ids).
    windows = []
    for s in range(int(min(n_steps.max(initial=0), num_steps))):
        cols = np.flatnonzero((seg == s).any(0))
        windows.append((int(cols.min()), int(cols.max()) + 1))
    max_new = int(cfg.max_new_tokens)
    budget = p + sum(hi - lo for lo, hi in windows) + max_new
    if not windows or k_rep < 1:
        return MCLabels(any_hit, hits, valid, conts, cont_lens)
    main = sess_lib.start(model, prompt_tokens, prompt_mask, max_len=budget)
    for s, (lo, hi) in enumerate(windows):
        mask = seg[:, lo:hi] == s
        main = sess_lib.extend(model, main, response[:, lo:hi], mask)
        rows = [i for i in range(b) if s < min(int(n_steps[i]), num_steps) - 1]
        if not rows:
            continue
        src = np.repeat(np.asarray(rows), k_rep)
        forked = sess_lib.fork(main, src)
        keys = jax.numpy.stack(
            [jax.random.fold_in(step_key(key, i, s), j) for i in rows for j in range(k_rep)]
        )
        _, toks, _, lens, _ = sess_lib.generate(model, forked, keys, cfg, steps=max_new)
        toks, lens = np.asarray(toks), np.asarray(lens)
        prefix_end = {i: int(np.flatnonzero(seg[i] == s).max()) + 1 for i in rows}
        seqs = [
            response[i, : prefix_end[i]].tolist() + toks[r, : lens[r]].tolist()
            for r, i in enumerate(src.tolist())
        ]
        ok = np.asarray(correct_fn(src.tolist(), seqs), np.float32).reshape(len(rows), k_rep)
        for r, i in enumerate(rows):
            hits[i, s] = ok[r].mean()
            any_hit[i, s] = ok[r].max()
            conts[(i, s)] = toks[r * k_rep : (r + 1) * k_rep]
            cont_lens[(i, s)] = lens[r * k_rep : (r + 1) * k_rep]
    return MCLabels(any_hit, hits, valid, conts, cont_lens)
