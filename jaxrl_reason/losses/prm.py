"""Training loss of a discriminative step PRM (Math-Shepherd, Wang et al. 2023, arXiv
2312.08935, eq. 2).

``L = - mean_{(b, s) valid} [ y log p + (1 - y) log(1 - p) ]`` with ``p = sigmoid(z)``, on hard
labels ``y in {0, 1}`` (Math-Shepherd's HE: any MC continuation correct, or oracle step labels)
or soft ones ``y in [0, 1]`` (SE: the fraction of correct continuations). Computed in the stable
form ``softplus(z) - y z``. Worked example (Math-Shepherd section of the design notes):
``p = [0.9, 0.6, 0.2]``, ``y = [1, 1, 0]`` -> 0.279777; ``y = [0.75, 0.25, 0]`` -> 0.564245.

Class-balanced form (``prm.balance``): ``w+ y log p + w- (1 - y) log(1 - p)`` with
``w+ = 1 / (2 r)``, ``w- = 1 / (2 (1 - r))`` for a label rate ``r`` (King and Zeng's prior
correction, the usual inverse-frequency weights). Policies that are mostly wrong give labels
of rate ~0.1, on which the unweighted loss is minimised by calling every step wrong (measured:
first-error F1 0 on arith_chain); the weights make a 0.5 threshold the balanced decision.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["balanced_weights", "prm_bce_loss"]


def prm_bce_loss(
    logits: jax.Array,
    labels: jax.Array,
    mask: jax.Array,
    pos_weight: float | jax.Array = 1.0,
    neg_weight: float | jax.Array = 1.0,
) -> jax.Array:
    """Masked mean (optionally class-weighted) binary cross-entropy of step logits against
    (soft) step labels.

    Args:
      logits: ``float[B, S]`` PRM step logits ``z`` (:func:`jaxrl_reason.models.prm.step_logits`).
      labels: ``float[B, S]`` targets in ``[0, 1]``.
      mask: ``bool/float[B, S]`` labelled steps.
      pos_weight / neg_weight: scalar weights of the ``y log p`` and ``(1 - y) log(1 - p)``
        terms (:func:`balanced_weights`); 1 and 1 give Math-Shepherd's plain loss.

    Returns: float32 scalar; 0 when no step is labelled.
    """
    z = jnp.asarray(logits, jnp.float32)
    y = jnp.asarray(labels, jnp.float32)
    m = jnp.asarray(mask, jnp.float32)
    # -log p = softplus(-z), -log(1 - p) = softplus(z): stable for any z.
    per = pos_weight * y * jax.nn.softplus(-z) + neg_weight * (1.0 - y) * jax.nn.softplus(z)
    return jnp.sum(per * m) / jnp.maximum(jnp.sum(m), 1.0)


def balanced_weights(label_rate: float, floor: float = 1e-3) -> tuple[float, float]:
    """Inverse-frequency class weights ``(1 / (2 r), 1 / (2 (1 - r)))`` for label rate ``r``
    (clipped to ``[floor, 1 - floor]``): both classes then carry half the loss's weight.
    ``r = 0.1`` -> ``(5.0, 0.5556)``."""
    r = min(max(float(label_rate), floor), 1.0 - floor)
    return 0.5 / r, 0.5 / (1.0 - r)
