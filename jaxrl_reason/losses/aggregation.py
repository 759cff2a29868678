"""Loss aggregation: a per-token loss matrix to a scalar, verl's four modes.

The mode decides how much each token and each sequence weighs in the gradient, which is a
modelling choice (DAPO, Dr.GRPO), not a detail. For a ragged batch with lengths ``L_b``:

* ``token-mean``: ``sum_{b,t} l m / sum_{b,t} m``; every token weighs ``1 / sum_b L_b``.
* ``seq-mean-token-sum``: ``mean_b sum_t l m``; every token weighs ``1 / B'``.
* ``seq-mean-token-mean``: ``mean_b (sum_t l m / L_b)``; a token of row b weighs
  ``1 / (B' L_b)``.
* ``seq-mean-token-sum-norm``: ``sum_{b,t} l m / C``; every token weighs ``1 / C``
  (``C = T``, the padded length, by default).

``B'`` counts rows with at least one masked token. ``token-mean`` is DAPO's token-level loss
(arXiv 2503.14476); ``seq-mean-token-mean`` is the original GRPO objective
(arXiv 2402.03300); ``seq-mean-token-sum-norm`` is Dr.GRPO's length-unbiased sum
(arXiv 2503.20783) with verl's constant: it divides by ``loss_scale_factor``, default the
padded response length ``T``, and does *not* divide by the number of rows (TRL's ``dr_grpo``
divides by ``B * max_completion_length``; Tunix's ``sequence-mean-token-sum-norm`` by ``B``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array

AGG_MODES: tuple[str, ...] = (
    "token-mean",
    "seq-mean-token-sum",
    "seq-mean-token-mean",
    "seq-mean-token-sum-norm",
)


def check_agg_mode(mode: str) -> str:
    """Returns ``mode`` or raises ``ValueError`` listing the valid aggregation modes."""
    if mode not in AGG_MODES:
        raise ValueError(
            f"unknown loss aggregation mode {mode!r}; valid modes: {', '.join(AGG_MODES)}"
        )
    return mode


def check_same_2d(**arrays) -> tuple[int, int]:
    """Raises ``ValueError`` naming the field unless every array has one shared [B, T] shape."""
    names = list(arrays)
    shapes = [tuple(jnp.shape(a)) for a in arrays.values()]
    if len(shapes[0]) != 2:
        raise ValueError(f"{names[0]} must be [B, T]; got shape {shapes[0]}")
    for name, shape in zip(names[1:], shapes[1:], strict=True):
        if shape != shapes[0]:
            raise ValueError(
                f"{name} has shape {shape} but {names[0]} has {shapes[0]}; "
                "per-token inputs must share one [B, T] shape"
            )
    return shapes[0]


def _safe_div(num: Array, den: Array) -> Array:
    den = jnp.asarray(den, jnp.float32)
    return jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), 0.0)


def aggregate(
    loss_mat: Array,
    mask: Array,
    mode: str = "token-mean",
    *,
    loss_scale_factor: float | None = None,
    num_tokens: float | Array | None = None,
    num_seqs: float | Array | None = None,
) -> Array:
    """Aggregates a per-token loss to a scalar (verl ``agg_loss``).

    Args:
      loss_mat: float ``[B, T]`` per-token losses.
      mask: ``[B, T]`` tokens that count.
      mode: static; one of :data:`AGG_MODES` (see the module table).
      loss_scale_factor: static constant ``C`` of ``seq-mean-token-sum-norm`` (verl's
        ``loss_scale_factor``); default ``T``. Keep it fixed across training (e.g. the
        maximum response length) so the loss scale does not follow the padding.
      num_tokens: optional global token count for ``token-mean`` (verl's
        ``batch_num_tokens``): with gradient accumulation, pass the count of the whole
        batch so that micro-batch losses sum to the full-batch loss.
      num_seqs: optional global non-empty sequence count for the two ``seq-mean-*`` modes
        (verl's ``global_batch_size``).

    Returns:
      float32 scalar. Empty mask: 0 in every mode (verl divides 0 by 0 and gives NaN).

    Raises:
      ValueError: unknown ``mode`` (listing the valid ones) or mismatched shapes.
    """
    check_agg_mode(mode)
    check_same_2d(loss_mat=loss_mat, mask=mask)
    m = jnp.asarray(mask, jnp.float32)
    x = jnp.where(m > 0, jnp.asarray(loss_mat, jnp.float32), 0.0)
    if mode == "token-mean":
        den = jnp.sum(m) if num_tokens is None else num_tokens
        return _safe_div(jnp.sum(x), den)
    seq_sum = jnp.sum(x, axis=-1)
    seq_len = jnp.sum(m, axis=-1)
    if mode == "seq-mean-token-sum-norm":
        scale = jnp.shape(m)[-1] if loss_scale_factor is None else loss_scale_factor
        return jnp.sum(seq_sum) / jnp.asarray(scale, jnp.float32)
    seq_valid = (seq_len > 0).astype(jnp.float32)
    per_seq = seq_sum if mode == "seq-mean-token-sum" else _safe_div(seq_sum, seq_len)
    den = jnp.sum(seq_valid) if num_seqs is None else num_seqs
    return _safe_div(jnp.sum(per_seq * seq_valid), den)
