"""PRIME's online implicit PRM: a second language model trained in the loop on outcome labels.

PRIME (Cui et al. 2025, arXiv 2502.01456) keeps, beside the policy, an implicit process reward
model ``pi_phi`` (Yuan et al. 2024, "Free Process Rewards without Process Labels", arXiv
2412.01981): a causal LM initialised from the reference (= the initial policy) whose
log-ratio to the frozen reference is a token-level reward::

    r_phi(y_t) = beta * (log pi_phi(y_t | y_<t) - log pi_ref(y_t | y_<t))     [B, R]
    r_phi(y)   = sum_t r_phi(y_t)   over the response (loss-mask) tokens        [B]
    L_CE       = mean_b BCE(sigmoid(r_phi(y_b)), o_b)                           o_b in {0, 1}

``L_CE`` is PRIME's ``compute_ce_dpo_loss_rm`` (verl ``recipe/prime/prime_core_algos.py``,
the ImplicitPRM ``CETrainer.loss_fn``), written stably as ``softplus(z) - o z`` by
:func:`jaxrl_reason.credit.implicit_prm_loss`. Only the outcome label (the task verifier's
``correct``) trains it; the token rewards reach the ``prime`` estimator as
``Trajectories.process_rewards``.

Order within an RL step (``implicit_prm.update_order``), PRIME's ``reward_model.model.update``:

- ``"before"`` (verl ``recipe/prime`` default, "double forward"): one pass of PRM updates
  over this step's rollouts, then a forward of the updated PRM gives the rewards.
- ``"after"`` (PRIME's original ``run_prime_main.sh``, "single forward"): the rewards come
  from the PRM as it was at the start of the step, then it is updated. (PRIME's code reads
  them off the update's own forward pass, so later mini-batches see a PRM already moved by
  earlier ones; here every row is scored by the same pre-update PRM.)

One pass = ``train.mini_batch_size`` rows per update, ``train.micro_batch_size`` per
micro-batch (PRIME: ``reward_model.mini_batch_size`` = the actor's PPO mini-batch), AdamW at
a constant ``implicit_prm.lr`` (PRIME 1e-6) without weight decay, global-norm clip
``implicit_prm.grad_clip``
(PRIME's scripts 10), the policy's trainable subset (``optim.trainable``) and temperature.

Log-probs are of ``softmax(logits / T)`` at the rollout temperature ``T``, as the trainer's
``ref_logprobs`` are: the reference forward of the KL term is reused as is and the frozen
reference is held once (``Trainer.ref_params``), never copied for the PRM.

Metrics (every step): ``prm/loss`` (``L_CE`` before each update, averaged over the pass),
``prm/accuracy`` (fraction of responses with ``sigmoid(r_phi(y)) > 0.5`` iff correct, i.e.
``(r_phi(y) > 0) == o``, in the same pass), ``prm/grad_norm``, ``prm/nonfinite`` and
``prm/reward_mean`` (mean ``r_phi(y)`` of the rewards handed to the estimator).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxrl_reason import credit
from jaxrl_reason.train.step import LossConfig, sequence_logprobs

Array = jax.Array

__all__ = [
    "PRM_UPDATES",
    "build_prm_optimizer",
    "prm_enabled",
    "prm_loss",
    "prm_optim_config",
    "prm_token_rewards",
]

#: ``implicit_prm.update_order`` values: train the PRM before or after it scores the step's
#: rollouts.
PRM_UPDATES: tuple[str, ...] = ("before", "after")


def prm_enabled(config: Any) -> bool:
    """Whether ``config`` trains an online PRM (``implicit_prm.online``; absent = off)."""
    return "implicit_prm" in config and bool(config.implicit_prm.get("online", False))


def prm_optim_config(config: Any) -> dict[str, Any]:
    """The PRM's ``optim`` settings: the policy's trainable subset and Adam moments, with
    PRIME's constant learning rate ``implicit_prm.lr``, no weight decay and clip
    ``implicit_prm.grad_clip``."""
    cfg = dict(config.optim)
    cfg.pop("max_grad_norm", None)  # the older clip name would win over grad_clip
    cfg.update(
        learning_rate=float(config.implicit_prm.lr),
        schedule="constant",
        warmup_steps=0,
        weight_decay=0.0,
        grad_clip=float(config.implicit_prm.get("grad_clip", 10.0)),
    )
    return cfg


def build_prm_optimizer(config: Any, params: Any):
    """The PRM's :class:`jaxrl_reason.train.optim.Optimizer` over ``(params, None)``.

    The pair mirrors the policy's ``(params, value_head)`` so that the PRM's state is a train
    state without a value head: :func:`jaxrl_reason.parallel.shard_train_state` places it,
    :func:`jaxrl_reason.train.step.make_update_fn` updates it.
    """
    from jaxrl_reason.train.optim import build_optimizer
    from jaxrl_reason.train.state import updates_per_step

    return build_optimizer(
        prm_optim_config(config),
        (params, None),
        total_steps=max(config.total_steps * updates_per_step(config), 1),
    )


def prm_token_rewards(
    prm_logp: Array, ref_logp: Array, response_mask: Array, *, beta: float
) -> Array:
    """Token process rewards ``beta * (log pi_prm - log pi_ref)`` (Free Process Rewards,
    arXiv 2412.01981, Eq. for ``r_phi(y_t)``), float32 ``[B, R]``, 0 off ``response_mask``.

    Args:
      prm_logp, ref_logp: float ``[B, R]`` log-probs of the response tokens under the PRM and
        the frozen reference. response_mask: ``[B, R]`` (the loss mask).
        beta: ``implicit_prm.beta``.
    """
    return credit.implicit_process_rewards(prm_logp, ref_logp, response_mask, beta=beta)


def prm_loss(model: nnx.Module, batch: dict[str, Array], cfg: LossConfig, *, beta: float):
    """The implicit-PRM cross-entropy of one micro-batch and its metrics.

    ``z_b = beta * sum_t (log pi_phi - log pi_ref)[b, t] * m[b, t]``,
    ``L = mean_b softplus(z_b) - o_b z_b`` (= BCE(sigmoid(z_b), o_b); PRIME's
    ``compute_ce_dpo_loss_rm``). Gradients reach the PRM (``model``) only: the reference
    log-probs are data.

    Args:
      model: the PRM (a :class:`jaxrl_reason.models.Transformer`).
      batch: ``prompt_tokens int32[b, P]``, ``prompt_mask bool[b, P]``, ``response
        int32[b, R]``, ``response_mask float32[b, R]`` (the loss mask), ``ref_logprobs
        float32[b, R]`` and ``outcome float32[b]`` (the verifier's label in {0, 1}).
      cfg: the policy's :class:`LossConfig` (temperature, kernel, frozen layers).
      beta: ``implicit_prm.beta``.

    Returns:
      ``(loss, {"loss", "accuracy"})``: float32 scalars; ``accuracy`` is the fraction of rows
      with ``(z_b > 0) == (o_b > 0.5)`` (``sigmoid(z_b) > 0.5`` iff the response is correct).
    """
    logp, _, _ = sequence_logprobs(model, batch, cfg)
    ref = jax.lax.stop_gradient(batch["ref_logprobs"])
    mask = batch["response_mask"]
    outcome = batch["outcome"].astype(jnp.float32)
    loss = credit.implicit_prm_loss(logp, ref, mask, outcome, beta=beta)
    z = jax.lax.stop_gradient(jnp.sum(prm_token_rewards(logp, ref, mask, beta=beta), axis=-1))
    agree = (z > 0) == (outcome > 0.5)
    return loss, {"loss": loss, "accuracy": jnp.mean(agree.astype(jnp.float32))}
