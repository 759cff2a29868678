"""Shaping rewards: answer format, overlong punishment, length penalties.

``format_reward`` works on strings (host). The length terms are pure ``jnp`` functions of the
response lengths, jit-able, and also accept numpy arrays.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_reason.rewards.extract import extract_answer

__all__ = [
    "FORMAT_CHOICES",
    "format_reward",
    "kimi_length_reward",
    "length_penalty",
    "overlong_penalty",
]

#: Formats :func:`format_reward` can require. ``"auto"`` accepts any explicit final-answer
#: marker (``####``, ``\\boxed{}``, "the answer is"), but not a bare last number.
FORMAT_CHOICES = ("hash", "boxed", "answer_is", "auto")


def format_reward(responses: Sequence[str], fmt: str = "auto") -> np.ndarray:
    """1.0 where the response states a final answer in the required format, else 0.0.

    Args:
      responses: ``B`` decoded responses.
      fmt: one of :data:`FORMAT_CHOICES` (``"hash"`` for GSM8K's ``#### N``, ``"boxed"`` for
        ``\\boxed{}``).
    Returns:
      ``float32[B]``.
    """
    if fmt not in FORMAT_CHOICES:
        raise ValueError(f"format_reward: fmt={fmt!r}; use one of {FORMAT_CHOICES}")
    names = ("hash", "boxed", "answer_is") if fmt == "auto" else (fmt,)
    out = np.zeros(len(responses), dtype=np.float32)
    for i, r in enumerate(responses):
        out[i] = float(any(extract_answer(r, n)[0] is not None for n in names))
    return out


def overlong_penalty(
    lengths: jax.Array, max_len: int, buffer_len: int, penalty: float = 1.0
) -> jax.Array:
    """DAPO's soft overlong punishment (Yu et al., 2025, arXiv 2503.14476, Eq. 13).

    With ``L_max = max_len`` and ``L_cache = buffer_len``::

        R(L) = 0                                   if L <= L_max - L_cache
             = ((L_max - L_cache) - L) / L_cache   if L_max - L_cache < L <= L_max
             = -1                                  if L > L_max

    times ``penalty``. A response cut at the generation limit (``L = L_max``) gets -1.

    Args:
      lengths: ``int[B]`` response lengths in tokens.
      max_len: ``L_max``, usually the sampler's ``max_new_tokens``.
      buffer_len: ``L_cache`` > 0, the soft zone before ``max_len`` (DAPO: 4096 of 20480).
      penalty: scale of the punishment (DAPO: 1.0).
    Returns:
      ``float32[B]``, in ``[-penalty, 0]``.
    """
    if not 0 < buffer_len <= max_len:
        raise ValueError(
            f"overlong_penalty: buffer_len={buffer_len} must be in (0, max_len={max_len}]"
        )
    lengths = jnp.asarray(lengths, jnp.float32)
    start = float(max_len - buffer_len)
    soft = (start - lengths) / float(buffer_len)
    r = jnp.where(lengths <= start, 0.0, jnp.where(lengths <= max_len, soft, -1.0))
    return (penalty * r).astype(jnp.float32)


def length_penalty(lengths: jax.Array, max_len: int, coef: float = 1.0) -> jax.Array:
    """Linear length cost ``-coef * L / max_len`` (``float32[B]``, in ``[-coef, 0]`` for L <= max).

    The plain per-token cost used to discourage verbosity (e.g. the length-penalty baselines in
    Arora & Zanette, 2025, arXiv 2502.04463); prefer :func:`kimi_length_reward` when the
    penalty should only compare responses to the same prompt.
    """
    if max_len <= 0:
        raise ValueError(f"length_penalty: max_len={max_len} must be > 0")
    return (-coef * jnp.asarray(lengths, jnp.float32) / float(max_len)).astype(jnp.float32)


def kimi_length_reward(
    lengths: jax.Array, correct: jax.Array, group_ids: jax.Array, num_groups: int
) -> jax.Array:
    """Kimi k1.5 length reward (Kimi Team, 2025, arXiv 2501.12599, Sec. 2.3.3).

    Within each prompt group, ``lambda_i = 0.5 - (len_i - min_len) / (max_len - min_len)``;
    the reward is ``lambda_i`` for a correct response and ``min(0, lambda_i)`` for a wrong one,
    so short correct answers gain and long wrong ones lose. A group whose lengths are all equal
    gets 0 (the paper's ratio is undefined there).

    Args:
      lengths: ``int[B]`` response lengths.
      correct: ``[B]`` 1 / 0 (or bool) correctness.
      group_ids: ``int32[B]`` prompt group of each response, in ``[0, num_groups)``.
      num_groups: static number of groups.
    Returns:
      ``float32[B]`` in ``[-0.5, 0.5]``.
    """
    lengths = jnp.asarray(lengths, jnp.float32)
    group_ids = jnp.asarray(group_ids, jnp.int32)
    lo = jax.ops.segment_min(lengths, group_ids, num_segments=num_groups)[group_ids]
    hi = jax.ops.segment_max(lengths, group_ids, num_segments=num_groups)[group_ids]
    span = hi - lo
    lam = jnp.where(span > 0, 0.5 - (lengths - lo) / jnp.where(span > 0, span, 1.0), 0.0)
    is_correct = jnp.asarray(correct) > 0
    return jnp.where(is_correct, lam, jnp.minimum(0.0, lam)).astype(jnp.float32)
