"""Training loss of a discriminative step PRM (Math-Shepherd, Wang et al. 2023, arXiv
2312.08935, eq. 2).

``L = - mean_{(b, s) valid} [ y log p + (1 - y) log(1 - p) ]`` with ``p = sigmoid(z)``, on hard
labels ``y in {0, 1}`` (Math-Shepherd's HE: any MC continuation correct, or oracle step labels)
or soft ones ``y in [0, 1]`` (SE: the fraction of correct continuations). Computed in the stable
form ``softplus(z) - y z``. Worked example (Math-Shepherd section of the design notes):
``p = [0.9, 0.6, 0.2]``, ``y = [1, 1, 0]`` -> 0.279777; ``y = [0.75, 0.25, 0]`` -> 0.564245.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["prm_bce_loss"]


def prm_bce_loss(logits: jax.Array, labels: jax.Array, mask: jax.Array) -> jax.Array:
    """Masked mean binary cross-entropy of step logits against (soft) step labels.

    Args:
      logits: ``float[B, S]`` PRM step logits ``z`` (:func:`jaxrl_reason.models.prm.step_logits`).
      labels: ``float[B, S]`` targets in ``[0, 1]``.
      mask: ``bool/float[B, S]`` labelled steps.

    Returns: float32 scalar; 0 when no step is labelled.
    """
    z = jnp.asarray(logits, jnp.float32)
    y = jnp.asarray(labels, jnp.float32)
    m = jnp.asarray(mask, jnp.float32)
    per = jax.nn.softplus(z) - y * z
    return jnp.sum(per * m) / jnp.maximum(jnp.sum(m), 1.0)
