"""KL estimators against a reference policy, and the entropy bonus.

KL estimators (J. Schulman, "Approximating KL divergence", 2020,
http://joschu.net/blog/kl-approx.html), per token, with ``d = logp - logp_ref`` for tokens
sampled from the current policy, estimating KL(pi || pi_ref):

* ``k1`` / ``kl``: ``d``. Unbiased, high variance, can be negative.
* ``abs``: ``|d|``.
* ``k2`` / ``mse``: ``0.5 d^2``. Biased, low variance; its gradient is the unbiased
  gradient of the KL.
* ``k3`` / ``low_var_kl``: ``exp(-d) - 1 + d`` (>= 0). Unbiased, low variance. Following
  verl, ``-d`` is clamped to [-20, 20] before ``exp`` and the result to [-10, 10].
* a ``+`` suffix (``k1+``, ``kl+``, ``abs+``, ``k3+``, ``low_var_kl+``): verl's
  straight-through variant: the forward value of the named estimator with the gradient of
  ``k2``.

All match verl ``kl_penalty`` numerically.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxrl_reason.losses.aggregation import aggregate, check_same_2d

Array = jax.Array

_BASE_KINDS = {
    "k1": "k1",
    "kl": "k1",
    "abs": "abs",
    "k2": "k2",
    "mse": "k2",
    "k3": "k3",
    "low_var_kl": "k3",
}
KL_KINDS: tuple[str, ...] = (
    *_BASE_KINDS,
    *(f"{k}+" for k in _BASE_KINDS if _BASE_KINDS[k] != "k2"),
)

# verl's clamps of k3: on the log-ratio (exp overflow) and on the estimate (outliers).
_K3_LOG_RATIO_CLAMP = 20.0
_K3_VALUE_CLAMP = 10.0


def _kl_forward(d: Array, base: str) -> Array:
    if base == "k1":
        return d
    if base == "abs":
        return jnp.abs(d)
    if base == "k2":
        return 0.5 * jnp.square(d)
    neg = jnp.clip(-d, -_K3_LOG_RATIO_CLAMP, _K3_LOG_RATIO_CLAMP)
    return jnp.clip(jnp.exp(neg) - neg - 1.0, -_K3_VALUE_CLAMP, _K3_VALUE_CLAMP)


def kl(logprobs: Array, ref_logprobs: Array, kind: str) -> Array:
    """Per-token KL estimate between the policy and a reference (verl ``kl_penalty``).

    Args:
      logprobs: float ``[...]`` log-probs of the sampled tokens under the current policy.
      ref_logprobs: float, same shape, under the reference policy.
      kind: static; one of :data:`KL_KINDS` (see the module docstring).

    Returns:
      float32, same shape, *not* masked: aggregate it with
      :func:`~jaxrl_reason.losses.aggregate` (KL loss, verl ``use_kl_loss``) or subtract
      ``beta * kl`` from the token rewards (KL in the reward, verl ``use_kl_in_reward``).

    Raises:
      ValueError: unknown ``kind`` (listing the valid ones) or mismatched shapes.
    """
    straight_through = kind.endswith("+")
    base = _BASE_KINDS.get(kind[:-1] if straight_through else kind)
    if base is None or (straight_through and base == "k2"):
        raise ValueError(f"unknown KL kind {kind!r}; valid kinds: {', '.join(KL_KINDS)}")
    if jnp.shape(logprobs) != jnp.shape(ref_logprobs):
        raise ValueError(
            f"ref_logprobs has shape {jnp.shape(ref_logprobs)} but logprobs has "
            f"{jnp.shape(logprobs)}; they must match"
        )
    d = jnp.asarray(logprobs, jnp.float32) - jnp.asarray(ref_logprobs, jnp.float32)
    forward = _kl_forward(d, base)
    if not straight_through:
        return forward
    backward = 0.5 * jnp.square(d)
    return backward - jax.lax.stop_gradient(backward) + jax.lax.stop_gradient(forward)


def entropy_from_logits(logits: Array) -> Array:
    """Categorical entropy ``H = logsumexp(z) - sum softmax(z) z`` over the last axis.

    Shapes: ``logits [..., V]`` -> float32 ``[...]``; ``-inf`` logits (top-k / top-p
    filtered) are allowed. (verl ``entropy_from_logits``; the
    project's ``kernels.token_logprob`` returns the same quantity without materialising
    ``[B, T, V]``.)
    """
    z = jnp.asarray(logits, jnp.float32)
    p = jax.nn.softmax(z, axis=-1)
    # Filtered-out (-inf) logits have p = 0 and must contribute 0, not 0 * -inf = NaN (in
    # the value or the gradient): replace them before the product.
    z_finite = jnp.where(jnp.isfinite(z), z, 0.0)
    return jax.nn.logsumexp(z, axis=-1) - jnp.sum(p * z_finite, axis=-1)


def entropy_loss(
    entropy: Array,
    response_mask: Array,
    agg_mode: str = "token-mean",
    *,
    loss_scale_factor: float | None = None,
    num_tokens: float | Array | None = None,
    num_seqs: float | Array | None = None,
) -> Array:
    """Aggregated token entropy, the entropy bonus (verl ``compute_entropy_loss``).

    Positive: the total loss *subtracts* it, ``loss = pg_loss - entropy_coeff * entropy_loss``,
    as verl's actor does.

    Args:
      entropy: float ``[B, T]`` per-token entropies (``kernels.token_logprob`` or
        :func:`entropy_from_logits`).
      response_mask: ``[B, T]``.
      agg_mode: static aggregation mode (same as the policy loss, as in verl).
      loss_scale_factor, num_tokens, num_seqs: passed to :func:`aggregate`.

    Returns:
      float32 scalar; 0 for an empty mask.
    """
    check_same_2d(entropy=entropy, response_mask=response_mask)
    return aggregate(
        entropy,
        response_mask,
        agg_mode,
        loss_scale_factor=loss_scale_factor,
        num_tokens=num_tokens,
        num_seqs=num_seqs,
    )
