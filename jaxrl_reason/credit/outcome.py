"""Outcome-reward advantage estimators: GRPO, Dr.GRPO, RLOO, REINFORCE++ (+ baseline), GAE.

Every estimator has the common signature of ``docs/contracts.md``::

    fn(token_rewards [B, T], response_mask [B, T], group_ids int32[B], **kw)
        -> (advantages [B, T], returns [B, T])      # float32, zero outside the mask

and is registered by name (``credit.get("grpo")``). Configuration (``norm_by_std``, ``eps``,
``gamma``, ``lam``, ``whiten``) goes in keywords; ``norm_by_std`` / ``whiten`` change the
computation and must be static under ``jax.jit``; ``gamma``, ``lam``, ``eps`` may be traced.

They reproduce ``verl/trainer/ppo/core_algos.py`` (volcengine/verl), function by function;
each docstring names the verl function and lists the deviations. Two hold for all of them:

* The outcome score of a row is ``sum_t token_rewards * response_mask``. verl sums the whole
  row, mask or not; the results differ only if rewards sit on masked-out tokens, which verl's
  reward managers never produce. Here a masked-out value never changes a result.
* Outputs are exactly zero outside the mask (verl leaves non-zero values in padding for GAE
  and REINFORCE++ returns).

Edge cases (all finite):

* group of one (``group_ids`` unique): verl's convention, mean 0 and std 1, so GRPO gives
  ``score / (1 + eps)``, Dr.GRPO and RLOO give ``score``.
* all-equal group: GRPO / Dr.GRPO / RLOO give 0 (std 0, divided by ``0 + eps``).
* empty mask row: score 0; the row still counts in its group's statistics (as in verl) and
  its own advantages are all 0. An all-empty batch gives all zeros.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxrl_reason.credit.registry import register
from jaxrl_reason.credit.scans import discounted_returns, gae_scan
from jaxrl_reason.credit.segments import group_moments, masked_sum, masked_whiten

Array = jax.Array


def _check_inputs(token_rewards: Array, response_mask: Array, group_ids: Array | None) -> None:
    rs, ms = tuple(jnp.shape(token_rewards)), tuple(jnp.shape(response_mask))
    if len(rs) != 2:
        raise ValueError(f"token_rewards must be [B, T]; got shape {rs}")
    if ms != rs:
        raise ValueError(
            f"response_mask has shape {ms} but token_rewards has {rs}; they must match"
        )
    if group_ids is not None:
        gs = tuple(jnp.shape(group_ids))
        if gs != rs[:1]:
            raise ValueError(
                f"group_ids must be int[B] with B={rs[0]} (one id per row); got shape {gs}"
            )


def sequence_scores(token_rewards: Array, response_mask: Array) -> Array:
    """Outcome score per row: ``sum_t token_rewards[b, t] * response_mask[b, t]``; float32 [B]."""
    return masked_sum(token_rewards, response_mask, axis=-1)


def _group_baseline(scores: Array, group_ids: Array) -> tuple[Array, Array, Array]:
    """verl's group statistics: mean, unbiased std, size; singleton groups get mean 0, std 1."""
    mean, var, count = group_moments(scores, group_ids, unbiased=True)
    single = count <= 1
    return jnp.where(single, 0.0, mean), jnp.where(single, 1.0, jnp.sqrt(var)), count


def _to_tokens(per_row: Array, response_mask: Array) -> Array:
    return per_row[:, None] * jnp.asarray(response_mask, jnp.float32)


@register("grpo")
def grpo(
    token_rewards: Array,
    response_mask: Array,
    group_ids: Array,
    *,
    norm_by_std: bool = True,
    eps: float = 1e-6,
) -> tuple[Array, Array]:
    """GRPO outcome advantage (Shao et al. 2024, DeepSeekMath, arXiv 2402.03300, sec. 4.1.2).

    ``A_i = (s_i - mean_g(s)) / (std_g(s) + eps)`` for every token of response i, where g is
    the prompt group of i, ``s`` the outcome score and ``std`` the unbiased (Bessel-corrected)
    standard deviation; ``norm_by_std=False`` drops the division (Dr.GRPO).

    Matches verl ``compute_grpo_outcome_advantage`` (``epsilon=1e-6``,
    ``norm_adv_by_std_in_grpo``), including its singleton convention (mean 0, std 1).

    Args:
      token_rewards: float ``[B, T]``; the outcome reward usually sits on the last token.
      response_mask: ``[B, T]``.
      group_ids: int ``[B]``; rows of the same prompt share an id (any integers).
      norm_by_std: static; divide by the group std.
      eps: added to the std (not the variance), as in verl.

    Returns:
      ``(advantages, returns)``, both the same float32 ``[B, T]`` array.
    """
    _check_inputs(token_rewards, response_mask, group_ids)
    scores = sequence_scores(token_rewards, response_mask)
    mean, std, _ = _group_baseline(scores, group_ids)
    adv = scores - mean
    if norm_by_std:
        adv = adv / (std + jnp.asarray(eps, jnp.float32))
    adv = _to_tokens(adv, response_mask)
    return adv, adv


@register("dr_grpo")
def dr_grpo(token_rewards: Array, response_mask: Array, group_ids: Array) -> tuple[Array, Array]:
    """Dr.GRPO advantage (Liu et al. 2025, "Understanding R1-Zero-Like Training", 2503.20783).

    ``A_i = s_i - mean_g(s)``: GRPO without the std division, which the paper shows biases
    updates toward too-easy and too-hard prompts. Pair it with the
    ``seq-mean-token-sum-norm`` aggregation (no per-length normalisation) for the full method.
    verl: ``compute_grpo_outcome_advantage(norm_adv_by_std_in_grpo=False)``; singleton groups
    keep their raw score (mean 0).

    Shapes as :func:`grpo`.
    """
    return grpo(token_rewards, response_mask, group_ids, norm_by_std=False)


@register("rloo")
def rloo(token_rewards: Array, response_mask: Array, group_ids: Array) -> tuple[Array, Array]:
    """REINFORCE leave-one-out (Ahmadian et al. 2024, "Back to Basics", arXiv 2402.14740).

    ``A_i = s_i - mean_{j != i in g} s_j = n / (n - 1) * (s_i - mean_g(s))`` with n the group
    size. Matches verl ``compute_rloo_outcome_advantage``: a group of one keeps ``A_i = s_i``
    (verl's ``compute_rloo_vectorized_outcome_advantage`` and Tunix give 0 there instead).

    Shapes as :func:`grpo`.
    """
    _check_inputs(token_rewards, response_mask, group_ids)
    scores = sequence_scores(token_rewards, response_mask)
    mean, _, n = _group_baseline(scores, group_ids)
    adv = jnp.where(n > 1, n / jnp.maximum(n - 1.0, 1.0) * (scores - mean), scores)
    adv = _to_tokens(adv, response_mask)
    return adv, adv


@register("reinforce_pp")
def reinforce_pp(
    token_rewards: Array,
    response_mask: Array,
    group_ids: Array | None = None,
    *,
    gamma: float | Array = 1.0,
    reset_on_mask: bool = False,
) -> tuple[Array, Array]:
    """REINFORCE++ (Hu et al. 2025, arXiv 2501.03262): discounted returns, whitened batch-wide.

    ``G_t = r_t + gamma * G_{t+1}`` over the masked tokens (see
    :func:`~jaxrl_reason.credit.scans.discounted_returns`), then
    ``A = (G - mean(G)) / sqrt(var(G) + 1e-8)`` over every masked token of the batch (unbiased
    variance). Matches verl ``compute_reinforce_plus_plus_outcome_advantage``; ``group_ids`` is
    accepted for the common signature and ignored. The KL penalty of the paper is folded into
    ``token_rewards`` by the caller (``r_t - beta * kl_t``), as in verl.

    Multi-turn episodes (observation tokens inside the response carry ``mask == 0``): by
    default (``reset_on_mask=False``) the return passes through an observation span unchanged
    and undiscounted, so every turn's tokens see the final reward. verl's recurrence
    (``reset_on_mask=True``) restarts the return after every masked token, which cuts all but
    the last turn off from the outcome (the bug reported against verl's REINFORCE++, PR
    #6376). The two agree exactly when the mask has no interior zeros (single-turn
    responses, padding only at the ends), so single-turn numbers are verl's either way.

    Edge cases: a batch with one masked token (or all returns equal) has variance 0 and gives
    advantage 0; an empty mask gives zeros.

    Returns:
      ``(advantages, returns)`` float32 ``[B, T]``; ``returns`` are the un-whitened ``G_t``.
    """
    _check_inputs(token_rewards, response_mask, group_ids)
    returns = discounted_returns(token_rewards, response_mask, gamma, reset_on_mask=reset_on_mask)
    return masked_whiten(returns, response_mask), returns


@register("reinforce_pp_baseline")
def reinforce_pp_baseline(
    token_rewards: Array, response_mask: Array, group_ids: Array
) -> tuple[Array, Array]:
    """REINFORCE++-baseline (arXiv 2501.03262): group-mean baseline, then batch whitening.

    ``a_i = s_i - mean_g(s)`` (singleton group: mean 0), broadcast to the tokens of row i, then
    whitened over every masked token of the batch: ``(a - mean) / sqrt(var + 1e-8)``. The
    token-level statistics weight long responses more, as in verl
    ``compute_reinforce_plus_plus_baseline_outcome_advantage``, which this matches.

    Returns:
      ``(advantages, returns)``, both the same float32 ``[B, T]`` array.
    """
    _check_inputs(token_rewards, response_mask, group_ids)
    scores = sequence_scores(token_rewards, response_mask)
    mean, _, _ = _group_baseline(scores, group_ids)
    adv = masked_whiten(_to_tokens(scores - mean, response_mask), response_mask)
    return adv, adv


@register("gae", inputs={"values": "values"})
def gae(
    token_rewards: Array,
    response_mask: Array,
    group_ids: Array | None = None,
    *,
    values: Array | None = None,
    gamma: float | Array = 1.0,
    lam: float | Array = 1.0,
    whiten: bool = True,
) -> tuple[Array, Array]:
    """PPO's GAE advantage (Schulman et al. 2016, arXiv 1506.02438) with a critic.

    Raw advantages and returns from :func:`~jaxrl_reason.credit.scans.gae_scan`
    (``returns = A_raw + V``, the critic's regression target); then, when ``whiten``, the
    advantages are whitened over every masked token of the batch. Matches verl
    ``compute_gae_advantage_return`` (which always whitens; ``whiten=False`` is an addition).
    ``group_ids`` is accepted for the common signature and ignored.

    Args:
      token_rewards: float ``[B, T]``.
      response_mask: ``[B, T]``.
      group_ids: ignored.
      values: float ``[B, T]`` critic values, required (keyword).
      gamma, lam: discount and lambda (verl's defaults 1.0, 1.0); may be traced.
      whiten: static; whiten the advantages batch-wide.

    Returns:
      ``(advantages, returns)`` float32 ``[B, T]``, zero outside the mask.
    """
    if values is None:
        raise ValueError("gae needs the critic's values: pass values=[B, T] (keyword)")
    _check_inputs(token_rewards, response_mask, group_ids)
    if tuple(jnp.shape(values)) != tuple(jnp.shape(token_rewards)):
        raise ValueError(
            f"values has shape {jnp.shape(values)} but token_rewards has "
            f"{jnp.shape(token_rewards)}; they must match"
        )
    adv, returns = gae_scan(token_rewards, values, response_mask, gamma, lam)
    if whiten:
        adv = masked_whiten(adv, response_mask)
    return adv, returns
