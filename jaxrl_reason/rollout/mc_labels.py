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

Decoding (:mod:`jaxrl_reason.rollout.session`): the prompts are prefilled once and the
responses teacher-forced after them (:func:`~jaxrl_reason.rollout.session.extend`); each
step prefix is then continued ``K`` times from that cache by
:func:`jaxrl_reason.rollout.continuations.sample_continuations` (fork, rewind to the prefix,
re-feed its last token, generate): no prefix is ever prefilled twice. The same routine
estimates the ``vine`` strategy's step values.

Keys: continuation ``j`` of step ``k`` of row ``b`` draws its ``t``-th token with
``fold_in(fold_in(step_key(key, b, k), j), t)``, where ``step_key = fold_in(fold_in(key, b),
k)``, i.e. exactly the draws of ``sample(model, [prompt_b + prefix_{b,k}], [step_key], cfg
with n = K)`` (tested).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import jax
import numpy as np

from jaxrl_reason.parallel.host import to_host
from jaxrl_reason.rollout import session as sess_lib
from jaxrl_reason.rollout.continuations import sample_continuations
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
    # to_host: inputs that are device arrays spread over several processes are gathered.
    prompt_tokens = to_host(prompt_tokens).astype(np.int32)
    prompt_mask = to_host(prompt_mask).astype(bool)
    response = to_host(response).astype(np.int32)
    seg = to_host(segment_id).astype(np.int32)
    lengths = to_host(lengths)
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

    # The states: the prefix that ends with step s of row i, for every step but the last.
    states = [
        (i, st, int(np.flatnonzero(seg[i] == st).max()) + 1)
        for st in range(int(min(n_steps.max(initial=0), num_steps)))
        for i in range(b)
        if st < min(int(n_steps[i]), num_steps) - 1
    ]
    if not states or k_rep < 1:
        return MCLabels(any_hit, hits, valid, conts, cont_lens)
    max_new = int(cfg.max_new_tokens)
    r = response.shape[1]
    # The library: prompt + whole response of every row, room for one re-fed token and a
    # continuation (continuations.sample_continuations rewinds it to each prefix).
    lib = sess_lib.start(model, prompt_tokens, prompt_mask, max_len=p + r + 1 + max_new)
    lib = sess_lib.extend(model, lib, response, np.arange(r)[None, :] < lengths[:, None])
    plen = prompt_mask.sum(1)
    cont = sample_continuations(
        model,
        lib,
        cfg,
        src=[i for i, _, _ in states],
        num_real=[plen[i] + e - 1 for i, _, e in states],
        feed=[response[i, e - 1] for i, _, e in states],
        state_keys=[step_key(key, i, st) for i, st, _ in states],
        limit=[max_new] * len(states),
        prefixes=[response[i, :e].tolist() for i, _, e in states],
        k=k_rep,
        steps=max_new,
        score_fn=lambda state_of, seqs: correct_fn([states[m][0] for m in state_of], seqs),
    )
    for m, (i, st, _) in enumerate(states):
        hits[i, st] = cont.scores[m].mean()
        any_hit[i, st] = cont.scores[m].max()
        conts[(i, st)] = cont.tokens[m * k_rep : (m + 1) * k_rep]
        cont_lens[(i, st)] = cont.lengths[m * k_rep : (m + 1) * k_rep]
    return MCLabels(any_hit, hits, valid, conts, cont_lens)
