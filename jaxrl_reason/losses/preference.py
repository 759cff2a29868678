"""Supervised and preference losses: masked NLL (SFT / rejection-sampling fine-tuning) and DPO.

DPO (Rafailov et al. 2023, arXiv 2305.18290, eq. 7)::

    logp(y)  = sum_t mask[t] log pi(y_t | x, y_<t)            (a SUM over response tokens)
    h        = (logp_pol(y_w) - logp_ref(y_w)) - (logp_pol(y_l) - logp_ref(y_l))
    L_DPO    = -mean_b log sigmoid(beta h_b)
    label smoothing eps (cDPO): (1 - eps) (-log sigmoid(beta h)) + eps (-log sigmoid(-beta h))
    implicit reward r_hat(y) = beta (logp_pol(y) - logp_ref(y))   (metrics only)

Worked example (beta 0.1, two pairs): ``pol_w [-12, -30]``, ``pol_l [-15, -28]``,
``ref_w [-13, -29]``, ``ref_l [-14, -29.5]`` -> ``h = [2.0, -2.5]``, per-pair losses
``[0.598139, 0.825939]``, mean ``0.712039``; ``r_hat_w = [0.1, -0.1]``,
``r_hat_l = [-0.1, 0.15]``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxrl_reason.losses.aggregation import aggregate

__all__ = ["dpo_loss", "sequence_logprob", "sft_loss"]


def sequence_logprob(token_logprobs: jax.Array, mask: jax.Array) -> jax.Array:
    """``float32[B]`` = ``sum_t mask[b, t] * token_logprobs[b, t]`` (DPO's sequence
    log-likelihood; ``token_logprobs``, ``mask`` ``float32[B, T]``). Example: token log-probs
    ``[-1.5, -0.5, -2.0, pad]`` with mask ``[1, 1, 1, 0]`` -> ``-4.0``."""
    return jnp.sum(token_logprobs.astype(jnp.float32) * mask.astype(jnp.float32), axis=-1)


def sft_loss(token_logprobs: jax.Array, mask: jax.Array, agg_mode: str = "token-mean") -> jax.Array:
    """Negative log-likelihood over the mask: ``aggregate(-log pi(y_t), mask, agg_mode)``.

    The supervised term of STaR / RAFT / ReST-EM (fine-tune on verified samples): the mask
    selects the tokens to imitate (e.g. the loss mask of correct responses only).
    ``token_logprobs``, ``mask`` ``float32[B, T]`` -> scalar float32; ``token-mean`` is the
    mean NLL per masked token.
    """
    return aggregate(-token_logprobs.astype(jnp.float32), mask.astype(jnp.float32), agg_mode)


def dpo_loss(
    policy_chosen: jax.Array,
    policy_rejected: jax.Array,
    ref_chosen: jax.Array,
    ref_rejected: jax.Array,
    *,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
    weights: jax.Array | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """DPO loss over ``B`` preference pairs (module docstring: eq. 7 of Rafailov et al.).

    Args:
      policy_chosen, policy_rejected: ``float32[B]`` sequence log-probs (:func:`sequence_logprob`)
        of the preferred ``y_w`` and dispreferred ``y_l`` under the policy.
      ref_chosen, ref_rejected: the same under the frozen reference (no gradient flows).
      beta: the KL-strength ``beta`` (0.1 in the reference implementation's commands).
      label_smoothing: cDPO's ``eps`` (0 = plain DPO).
      weights: optional ``float32[B]`` pair weights: the loss and every metric are
        ``mean_b(weights_b * x_b)`` instead of ``mean_b(x_b)``. Padding pairs get weight 0; the
        trainer scales the rest so that averaging the micro-batches' means gives the mean over
        the mini-batch's real pairs (:mod:`jaxrl_reason.train.selftrain`).

    Returns:
      ``(loss float32[], metrics)`` with ``dpo/reward_chosen``, ``dpo/reward_rejected`` (mean
      implicit rewards), ``dpo/reward_margin`` and ``dpo/accuracy`` (fraction with
      ``h > 0``).
    """
    ref_chosen = jax.lax.stop_gradient(ref_chosen)
    ref_rejected = jax.lax.stop_gradient(ref_rejected)
    h = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)
    per = (1.0 - label_smoothing) * -jax.nn.log_sigmoid(
        beta * h
    ) + label_smoothing * -jax.nn.log_sigmoid(-beta * h)
    r_w = jax.lax.stop_gradient(beta * (policy_chosen - ref_chosen))
    r_l = jax.lax.stop_gradient(beta * (policy_rejected - ref_rejected))
    w = jnp.ones_like(per) if weights is None else jax.lax.stop_gradient(weights)
    wmean = lambda x: jnp.mean(w * x)  # noqa: E731
    metrics = {
        "dpo/reward_chosen": wmean(r_w),
        "dpo/reward_rejected": wmean(r_l),
        "dpo/reward_margin": wmean(r_w - r_l),
        "dpo/accuracy": wmean((h > 0).astype(jnp.float32)),
    }
    return wmean(per), metrics
