"""Monte Carlo continuations of response prefixes, decoded from a KV-cache session and scored.

One routine serves both consumers of "sample ``K`` continuations from each step prefix of a
response and score them":

- :mod:`jaxrl_reason.rollout.vine` (VinePPO, Kazemnejad et al. 2024, arXiv 2410.01679,
  Sec. 4: ``V(s_k) = 1/K sum_m R(eta_m)``, ``eta_m ~ pi(. | s_k)``; SPO-chain);
- :mod:`jaxrl_reason.rollout.mc_labels` (Math-Shepherd, Wang et al. 2023, arXiv 2312.08935,
  eqs. 3-4: ``y_HE = max_m hit_m``, ``y_SE = mean_m hit_m``).

A *state* ``m`` is a row ``src[m]`` of a library session that holds prompt + whole response,
cut back to its first ``num_real[m]`` real tokens (prompt tokens included) plus one re-fed
token ``feed[m]`` (the real token at that position: the last prompt token for the empty
prefix, else the prefix's last response token). Re-feeding one slot refreshes the next-token
state that :func:`~jaxrl_reason.rollout.session.rewind` leaves stale; nothing is re-prefilled.

Key schedule: continuation ``c`` of state ``m`` draws its ``t``-th token with
``fold_in(fold_in(state_keys[m], c), t)``: exactly the draws of ``sample(prompt + prefix,
state_keys[m], n=K)`` (the sampler's per-sample schedule; tested in ``tests/rollout/
test_vine.py`` and ``tests/rollout/test_mc_labels.py``).

Multi-host: every process runs the same calls with the same shapes (the states are derived
from host data that is identical on every process), and the decoded tokens come back through
:func:`jaxrl_reason.parallel.host.to_host`, a collective when the rows are spread over hosts.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_reason.parallel.host import to_host
from jaxrl_reason.rollout import session as ses
from jaxrl_reason.rollout.sampler import bucket_length

__all__ = ["Continuations", "continue_rows", "sample_continuations"]


@dataclasses.dataclass
class Continuations:
    """``K`` scored continuations of each of ``M`` states (host arrays).

    Attributes:
      tokens: ``int32[M * K, steps]``; row ``m * K + c`` is continuation ``c`` of state ``m``
        (the pad id after it stops).
      lengths: ``int32[M * K]`` drawn tokens (stop token included).
      scores: ``float32[M, K]`` the score of ``prefix + continuation``.
      decode_s: wall-clock seconds of the decode calls; score_s: of the scoring.
    """

    tokens: np.ndarray
    lengths: np.ndarray
    scores: np.ndarray
    decode_s: float = 0.0
    score_s: float = 0.0


def continue_rows(
    policy: Any,
    lib: ses.Session,
    src: np.ndarray,
    keep: np.ndarray,
    feed: np.ndarray,
    keys: jax.Array,
    cfg: Any,
    *,
    steps: int,
    active: np.ndarray,
    limit: np.ndarray,
    step_offset: np.ndarray | int = 0,
):
    """Decode continuations of rows of ``lib`` from a shorter prefix, from the KV cache.

    Row ``r`` forks ``lib``'s row ``src[r]``, keeps its first ``keep[r] + 1`` real tokens
    (rewinds to ``keep[r]`` and re-feeds ``feed[r]``, the token at that position, to refresh
    the next-token state: one slot, no re-prefill), then draws at most ``limit[r]`` tokens
    with ``fold_in(keys[r], step_offset[r] + t)``.

    Args:
      policy: the model. lib: a :class:`~jaxrl_reason.rollout.session.Session`.
      src, keep, feed: ``int[C]`` source row, real tokens kept before the re-fed one, and the
        re-fed token id. keys: ``key[C]``. cfg: the :class:`SamplingConfig`.
      steps: static decode length (>= every ``limit``). active: ``bool[C]`` (False: padding
        rows that draw nothing). limit: ``int32[C]``. step_offset: ``int32[C]`` or scalar.

    Returns:
      ``(tokens int32[C, steps], logprobs float32[C, steps], lengths int32[C],
      finish int32[C])`` as NumPy arrays (:func:`~jaxrl_reason.rollout.session.generate`),
      read back with ``to_host`` (a collective on a mesh spanning several processes: every
      process must call this with the same shapes).
    """
    s = ses.fork(lib, src)
    s = ses.rewind(s, np.asarray(keep, np.int32))
    s = ses.extend(policy, s, np.asarray(feed, np.int32)[:, None], np.asarray(active)[:, None])
    _, toks, lps, lens, fin = ses.generate(
        policy,
        s,
        keys,
        cfg,
        steps=steps,
        active=active,
        limit=np.asarray(limit, np.int32),
        step_offset=step_offset,
    )
    return tuple(to_host(x) for x in (toks, lps, lens, fin))


def sample_continuations(
    policy: Any,
    lib: ses.Session,
    cfg: Any,
    *,
    src: Sequence[int],
    num_real: Sequence[int],
    feed: Sequence[int],
    state_keys: Sequence[jax.Array],
    limit: Sequence[int],
    prefixes: Sequence[Sequence[int]],
    k: int,
    steps: int,
    score_fn: Callable[[list[int], list[list[int]]], Any],
    chunk_rows: int = 256,
) -> Continuations:
    """``K`` continuations of each state, decoded from ``lib``'s cache, and their scores.

    All ``M * K`` continuation rows are decoded together, in calls of a fixed ``chunk`` rows
    (``min(chunk_rows, bucket_length(M * K, minimum=8))``: few compiled shapes; the forked
    caches are the memory bound); the last call is padded with inactive rows.

    Args:
      policy: the model (the session's). lib: a :class:`~jaxrl_reason.rollout.session.Session`
        whose row ``src[m]`` holds the state's prompt + whole response, with at least
        ``1 + steps`` free slots. cfg: the :class:`~jaxrl_reason.rollout.SamplingConfig`.
      src: ``int[M]`` library row of each state.
      num_real: ``int[M]`` real tokens of the state's context *before* the re-fed one
        (``prompt_len + prefix_len - 1``).
      feed: ``int[M]`` the re-fed token (the context's last real token).
      state_keys: ``M`` PRNG keys (module docstring: continuation ``c`` uses
        ``fold_in(state_keys[m], c)``).
      limit: ``int[M]`` at most this many tokens per continuation (``<= steps``).
      prefixes: ``M`` response prefixes (token ids) prepended to each continuation before
        scoring.
      k: ``K`` continuations per state. steps: static decode length.
      score_fn: ``(state_index[M * K], token_lists[M * K]) -> float[M * K]``: the score of
        ``prefixes[m] + continuation`` (e.g. the task's verifier on the decoded text).
      chunk_rows: rows decoded per call.

    Returns:
      :class:`Continuations` (empty arrays and no call when ``M = 0``).
    """
    M, K = len(src), int(k)
    total = M * K
    if total == 0:
        return Continuations(
            np.zeros((0, steps), np.int32), np.zeros(0, np.int32), np.zeros((M, K), np.float32)
        )
    t0 = time.perf_counter()
    chunk = min(int(chunk_rows), bucket_length(total, 1 << 30, minimum=8))
    n_rows = -(-total // chunk) * chunk
    pad = n_rows - total

    def rows(x, dtype):
        x = np.repeat(np.asarray(x, dtype), K)
        return np.concatenate([x, np.zeros(pad, dtype)])

    src_r, keep_r = rows(src, np.int64), rows(num_real, np.int32)
    feed_r, limit_r = rows(feed, np.int32), rows(limit, np.int32)
    active = np.arange(n_rows) < total
    ckeys = ses.fold_keys(
        jnp.repeat(jnp.stack(list(state_keys)), K, axis=0), np.tile(np.arange(K), M)
    )
    ckeys = jnp.concatenate([ckeys, jnp.repeat(ckeys[:1], pad, axis=0)])
    toks = np.zeros((n_rows, steps), np.int32)
    lens = np.zeros(n_rows, np.int32)
    for lo in range(0, n_rows, chunk):
        sl = slice(lo, lo + chunk)
        ct, _, cl, _ = continue_rows(
            policy,
            lib,
            src_r[sl],
            keep_r[sl],
            feed_r[sl],
            ckeys[sl],
            cfg,
            steps=steps,
            active=active[sl],
            limit=limit_r[sl],
        )
        toks[sl], lens[sl] = ct, cl
    toks, lens = toks[:total], lens[:total]
    t1 = time.perf_counter()
    state_of = np.repeat(np.arange(M), K).tolist()
    seqs = [list(prefixes[m]) + toks[q, : lens[q]].tolist() for q, m in enumerate(state_of)]
    scores = np.asarray(score_fn(state_of, seqs), np.float32).reshape(M, K)
    return Continuations(toks, lens, scores, t1 - t0, time.perf_counter() - t1)
