"""Plain-jnp specification of the fused token log-prob: materialises ``[N, V]`` logits.

This is the spec every other implementation is tested against; it is also the naive baseline
of ``benchmarks/token_logprob.py``. Gradients come from ordinary autodiff.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def token_logprob_reference(
    hidden: jax.Array,
    lm_head: jax.Array,
    labels: jax.Array,
    *,
    temperature: float = 1.0,
    with_self_certainty: bool = False,
) -> tuple[jax.Array, ...]:
    """Per-token log-prob, entropy (and self-certainty) from hidden states, the naive way.

    Args:
      hidden: ``[..., D]`` float32 or bfloat16 final-norm hidden states.
      lm_head: ``[D, V]`` LM head (``embedding.T`` when tied), same dtype family as ``hidden``.
      labels: ``int32[...]`` token ids in ``[0, V)``, one per hidden state.
      temperature: logits are divided by it before the softmax (sampling temperature).
      with_self_certainty: also return ``KL(Uniform || p)`` per token.

    Returns:
      ``(logprobs, entropy)`` or ``(logprobs, entropy, self_certainty)``, each float32 ``[...]``:
      ``logprobs = log_softmax(z)[label]``, ``entropy = -sum_j p_j log p_j`` and
      ``self_certainty = -log V - (1/V) sum_j log p_j`` (INTUITOR, arXiv 2505.19590), where
      ``z = hidden @ lm_head / temperature`` accumulated in float32.
    """
    logits = jnp.dot(hidden, lm_head, preferred_element_type=jnp.float32) / temperature
    logp = jax.nn.log_softmax(logits, axis=-1)
    lp = jnp.take_along_axis(logp, labels[..., None].astype(jnp.int32), axis=-1)[..., 0]
    ent = -jnp.sum(jnp.exp(logp) * logp, axis=-1)
    if not with_self_certainty:
        return lp, ent
    vocab = lm_head.shape[-1]
    sc = -math.log(vocab) - jnp.mean(logp, axis=-1)
    return lp, ent, sc
