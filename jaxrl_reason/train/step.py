"""The jitted RL update: log-probs through the token log-prob kernel, loss, grads, optax.

Everything here is a pure function of arrays (and static config), compiled once per shape:

    logprobs = sequence_logprobs(model, batch)          # hidden states -> kernel, response only
    loss     = policy loss + kl_coef * KL - entropy_coef * H  (+ vf_coef * value loss for PPO)
    update   = micro-batched gradient accumulation -> optax -> non-finite guard

The batch is the verl layout: prompt ``[B, P]`` (left-padded) and response ``[B, R]``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jaxrl_reason import kernels, losses

Array = jax.Array
Batch = dict[str, Array]


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """Static knobs of the RL loss (hashable: part of the compiled function's identity).

    Attributes:
      loss_type: ``"ppo"`` (token ratios, clip / clip-higher / dual-clip) or ``"gspo"``.
      clip_low, clip_high: PPO clip epsilons (DAPO clip-higher when ``clip_high > clip_low``).
      dual_clip: dual-clip constant ``c`` (> 1) for negative advantages, or None.
      agg_mode: verl aggregation mode (``token-mean`` ...).
      kl_coef: weight of the KL-to-reference loss term (0 disables; no reference needed).
      kl_kind: ``k1`` / ``k2`` / ``k3`` (verl ``low_var_kl``).
      entropy_coef: weight of the entropy bonus (subtracted from the loss).
      vf_coef, value_clip: PPO critic loss weight and clip range (value head only).
      temperature: the sampling temperature; log-probs are of ``softmax(logits / T)``.
      kernel_impl: token log-prob implementation (None = best for the backend).
      frozen_layers: the first ``k`` decoder layers get no gradient and the backward pass
        stops before them (set from ``optim.trainable="last_k"``).
      remat: what the backward pass keeps of each decoder layer (``train.remat``:
        ``none`` / ``dots`` / ``full``, :data:`jaxrl_reason.models.transformer.REMAT_POLICIES`).
      objective: ``"rl"`` (:func:`rl_loss`), ``"sft"`` (:func:`sft_objective_loss`: the NLL of
        the batch's ``sft_mask`` only, STaR / RAFT) or ``"dpo"`` (:func:`dpo_objective_loss`).
      sft_coef: weight of the auxiliary NLL ``sft_loss(logp, sft_mask)`` added to the RL loss
        (0 = off; the batch then needs no ``sft_mask``).
      dpo_beta, dpo_label_smoothing: DPO's ``beta`` and cDPO's ``eps`` (``objective="dpo"``).
    """

    loss_type: str = "ppo"
    clip_low: float = 0.2
    clip_high: float = 0.2
    dual_clip: float | None = None
    agg_mode: str = "token-mean"
    kl_coef: float = 0.0
    kl_kind: str = "k3"
    entropy_coef: float = 0.0
    vf_coef: float = 0.5
    value_clip: float = 0.2
    temperature: float = 1.0
    kernel_impl: str | None = None
    frozen_layers: int = 0
    remat: str = "none"
    objective: str = "rl"
    sft_coef: float = 0.0
    dpo_beta: float = 0.1
    dpo_label_smoothing: float = 0.0


#: ``algo.objective`` values: what the update step minimises.
OBJECTIVES: tuple[str, ...] = ("rl", "sft", "dpo")


def resolve_remat(remat: str, backend: str | None = None) -> str:
    """``train.remat`` as a policy name: ``"auto"`` is ``"full"`` on CPU, where the saved
    activations dominate the update's memory and recomputing a layer costs no measurable time
    (``docs/performance.md``: peak RSS 7.31 -> 3.93 GiB, step 77.5 -> 75.2 s), and ``"none"``
    on GPU / TPU, where the recompute is a third more FLOPs."""
    if remat != "auto":
        return remat
    return "full" if (backend or jax.default_backend()) == "cpu" else "none"


def loss_config(config: Any, num_layers: int) -> LossConfig:
    """:class:`~jaxrl_reason.train.step.LossConfig` from ``config.loss`` (+ the temperature,
    ``algo.objective``, ``algo.sft_coef`` and ``dpo.beta`` / ``dpo.label_smoothing``).

    The RL objective scores tokens under the sampling distribution ``softmax(logits / T)``
    (the behaviour log-probs' temperature, so ratios start at 1). The supervised and
    preference objectives fit the model itself: their log-probs are at ``T = 1`` (STaR's and
    DPO's ``log pi(y | x)``), whatever temperature the rollout samples at.
    """
    fields = {f.name for f in dataclasses.fields(LossConfig)}
    kw = {k: v for k, v in config.loss.items() if k in fields}
    algo = config.get("algo", {})
    kw["objective"] = str(algo.get("objective", "rl"))
    kw["sft_coef"] = float(algo.get("sft_coef", 0.0))
    if "dpo" in config:
        kw["dpo_beta"] = float(config.dpo.get("beta", 0.1))
        kw["dpo_label_smoothing"] = float(config.dpo.get("label_smoothing", 0.0))
    supervised = kw["objective"] != "rl"
    kw["temperature"] = 1.0 if supervised else float(config.rollout.temperature)
    # Config files use 0 / "" for "off" so that overrides keep a fixed type.
    kw["dual_clip"] = kw.get("dual_clip") or None
    kw["kernel_impl"] = kw.get("kernel_impl") or None
    if config.optim.get("trainable", "all") == "last_k":
        kw["frozen_layers"] = num_layers - int(config.optim.last_k)
    kw["remat"] = resolve_remat(str(config.train.get("remat", "none")))
    return LossConfig(**kw)


def response_hidden(
    model: nnx.Module,
    prompt_tokens: Array,
    prompt_mask: Array,
    response: Array,
    *,
    frozen_layers: int = 0,
    remat: str = "none",
):
    """Hidden states that predict each response token.

    Runs the decoder over ``concat(prompt, response)`` and keeps positions ``P-1 .. P+R-2``
    (the state before each response token), so only response positions reach the LM head.

    Args:
      model: a :class:`jaxrl_reason.models.Transformer`.
      prompt_tokens: int32 ``[B, P]`` left-padded; ``prompt_mask`` bool ``[B, P]``.
      response: int32 ``[B, R]``.

    Returns:
      float ``[B, R, D]`` hidden states (model compute dtype).
    """
    p = prompt_tokens.shape[1]
    r = response.shape[1]
    tokens = jnp.concatenate([prompt_tokens, response], axis=1)
    # Response tokens after a stop token are padding, but causality keeps them from touching
    # earlier positions, so they can stay "real" for the mask.
    mask = jnp.concatenate([prompt_mask.astype(bool), jnp.ones(response.shape, bool)], axis=1)
    positions = jnp.maximum(jnp.cumsum(mask.astype(jnp.int32), axis=1) - 1, 0)
    hidden = model(
        tokens,
        positions=positions,
        attention_mask=mask,
        return_hidden=True,
        frozen_layers=frozen_layers,
        remat=remat,
    )
    return jax.lax.dynamic_slice_in_dim(hidden, p - 1, r, axis=1)


def sequence_logprobs(model: nnx.Module, batch: Batch, cfg: LossConfig):
    """Per-token log-probs and entropies of ``batch["response"]`` under ``model``.

    Returns ``(logprobs [B, R], entropy [B, R], hidden [B, R, D])`` (float32, float32, model
    dtype) computed by :func:`jaxrl_reason.kernels.token_logprob` without materialising
    ``[B, R, V]``.
    """
    h = response_hidden(
        model,
        batch["prompt_tokens"],
        batch["prompt_mask"],
        batch["response"],
        frozen_layers=cfg.frozen_layers,
        remat=cfg.remat,
    )
    logp, ent = kernels.token_logprob(
        h,
        model.lm_head_weight(),
        batch["response"],
        temperature=cfg.temperature,
        impl=cfg.kernel_impl,
    )
    return logp, ent, h


def rl_loss(model: nnx.Module, value_head: Any, batch: Batch, cfg: LossConfig):
    """Scalar RL loss of one micro-batch and its metrics.

    ``loss = L_pg + kl_coef * agg(KL(logp, ref_logp)) - entropy_coef * agg(H)
    (+ vf_coef * L_V when a value head is trained) (+ sft_coef * sft_loss(logp, sft_mask))``,
    each aggregated with ``cfg.agg_mode`` over ``batch["response_mask"]`` (the SFT term over
    ``batch["sft_mask"]``, float32 ``[B, R]``: the loss mask of the rows the verifier marked
    correct, RAFT / ReST-EM's "fine-tune on verified samples" as an auxiliary term; it uses
    the RL log-probs, at the rollout temperature). ``actor/sft_loss`` is logged whenever the
    batch has an ``sft_mask``.
    """
    mask = batch["response_mask"].astype(jnp.float32)
    logp, ent, h = sequence_logprobs(model, batch, cfg)
    pg_loss, metrics = losses.policy_loss(
        logp,
        batch["old_logprobs"],
        batch["advantages"],
        mask,
        clip_low=cfg.clip_low,
        clip_high=cfg.clip_high,
        dual_clip=cfg.dual_clip,
        agg_mode=cfg.agg_mode,
        loss_type=cfg.loss_type,
    )
    loss = pg_loss
    metrics = {f"actor/{k}": v for k, v in metrics.items()}
    metrics["actor/pg_loss"] = pg_loss
    entropy = losses.aggregate(ent, mask, cfg.agg_mode)
    metrics["actor/entropy"] = entropy
    if cfg.entropy_coef:
        loss = loss - cfg.entropy_coef * entropy
    if "ref_logprobs" in batch:
        kl = losses.aggregate(
            losses.kl(logp, batch["ref_logprobs"], cfg.kl_kind), mask, cfg.agg_mode
        )
        metrics["actor/kl"] = kl
        if cfg.kl_coef:
            loss = loss + cfg.kl_coef * kl
    if value_head is not None:
        values = value_forward(value_head, h)
        vloss, vmetrics = losses.value_loss(
            values,
            batch["returns"],
            batch["old_values"],
            mask,
            cliprange_value=cfg.value_clip,
            agg_mode=cfg.agg_mode,
        )
        metrics.update({f"critic/{k}": v for k, v in vmetrics.items()})
        metrics["critic/vf_loss"] = vloss
        loss = loss + cfg.vf_coef * vloss
    if "sft_mask" in batch:
        sft = losses.sft_loss(logp, batch["sft_mask"], cfg.agg_mode)
        metrics["actor/sft_loss"] = sft
        if cfg.sft_coef:
            loss = loss + cfg.sft_coef * sft
    metrics["loss"] = loss
    return loss, metrics


def sft_objective_loss(model: nnx.Module, batch: Batch, cfg: LossConfig):
    """Rejection-sampling fine-tuning (STaR, Zelikman et al. 2022, arXiv 2203.14465; RAFT,
    Dong et al. 2023, arXiv 2304.06767; ReST-EM, Singh et al. 2023, arXiv 2312.06585):
    ``loss = agg(-log pi(y_t | x, y_<t), sft_mask)``, the NLL of the kept (verified-correct)
    responses, with ``cfg.agg_mode`` (``token-mean``: mean NLL per kept token).

    ``batch``: ``prompt_tokens`` / ``prompt_mask`` ``[B, P]``, ``response`` ``[B, R]``,
    ``sft_mask`` float32 ``[B, R]`` (0 on rows that are not kept). Log-probs at ``cfg.temperature``
    (1.0 for this objective, :func:`loss_config`). Returns ``(loss, {"loss",
    "actor/sft_loss", "actor/entropy"})``.
    """
    mask = batch["sft_mask"].astype(jnp.float32)
    logp, ent, _ = sequence_logprobs(model, batch, cfg)
    loss = losses.sft_loss(logp, mask, cfg.agg_mode)
    return loss, {
        "loss": loss,
        "actor/sft_loss": loss,
        "actor/entropy": losses.aggregate(ent, mask, cfg.agg_mode),
    }


def dpo_objective_loss(model: nnx.Module, batch: Batch, cfg: LossConfig):
    """DPO (Rafailov et al. 2023, arXiv 2305.18290, eq. 7) on interleaved pairs.

    Rows ``2k`` and ``2k + 1`` of the batch are the chosen ``y_w`` and the rejected ``y_l`` of
    pair ``k`` (same prompt); ``logp(y) = sum_t response_mask * log pi(y_t | x, y_<t)`` (a sum,
    at ``T = 1``), ``h = (logp_pol(y_w) - logp_ref(y_w)) - (logp_pol(y_l) - logp_ref(y_l))``,
    ``loss = mean_k pair_weight_k * -log sigmoid(beta h_k)`` (cDPO label smoothing with
    ``cfg.dpo_label_smoothing``).

    ``batch``: ``prompt_tokens`` / ``prompt_mask`` ``[2K, P]``, ``response``,
    ``response_mask``, ``ref_logprobs`` (the frozen reference's token log-probs, float32)
    ``[2K, R]`` and ``pair_weight`` float32 ``[2K]`` (the pair's weight on both of its rows;
    0 for padding pairs). Returns ``(loss, metrics)`` with ``dpo/accuracy`` (share of pairs
    with ``h > 0``), ``dpo/margin`` (mean ``beta h``, the implicit reward margin),
    ``dpo/reward_chosen``, ``dpo/reward_rejected`` and ``loss``.
    """
    mask = batch["response_mask"].astype(jnp.float32)
    logp, _, _ = sequence_logprobs(model, batch, cfg)
    pol = losses.sequence_logprob(logp, mask)
    ref = losses.sequence_logprob(batch["ref_logprobs"], mask)
    w = batch["pair_weight"].astype(jnp.float32)[0::2]
    loss, m = losses.dpo_loss(
        pol[0::2],
        pol[1::2],
        ref[0::2],
        ref[1::2],
        beta=cfg.dpo_beta,
        label_smoothing=cfg.dpo_label_smoothing,
        weights=w,
    )
    m["dpo/margin"] = m.pop("dpo/reward_margin")
    m["loss"] = loss
    return loss, m


def value_forward(value_head: dict[str, Array], hidden: Array) -> Array:
    """Linear value head on hidden states: ``[B, R, D] -> [B, R]`` float32."""
    return jnp.einsum("brd,d->br", hidden.astype(jnp.float32), value_head["w"]) + value_head["b"]


def init_value_head(hidden_size: int) -> dict[str, Array]:
    """Zero-initialised value head (``V = 0`` at the start, a common PPO choice)."""
    return {"w": jnp.zeros((hidden_size,), jnp.float32), "b": jnp.zeros((), jnp.float32)}


def split_micro(batch: Batch, num_micro: int) -> Batch:
    """Reshapes every ``[B, ...]`` array to ``[num_micro, B // num_micro, ...]``."""

    def f(x):
        if x.shape[0] % num_micro:
            raise ValueError(
                f"batch size {x.shape[0]} is not divisible by {num_micro} micro-batches; "
                "set train.micro_batch_size to a divisor of the mini-batch size"
            )
        return x.reshape((num_micro, x.shape[0] // num_micro) + x.shape[1:])

    return jax.tree.map(f, batch)


def _all_finite(tree: Any) -> Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)


def make_update_fn(
    graphdef: Any,
    optimizer: optax.GradientTransformation,
    cfg: LossConfig,
    num_micro: int,
    *,
    with_value_head: bool = False,
    loss_fn: Callable | None = None,
) -> Callable:
    """Builds ``update(params, value_head, opt_state, batch) -> (params, value_head, opt_state,
    metrics)``, to be wrapped in ``jax.jit`` (with donation) by the caller.

    Gradients are accumulated over ``num_micro`` micro-batches with ``lax.scan`` and
    averaged (each micro-batch's aggregated loss weighs ``1 / num_micro``, verl's
    convention). ``optimizer`` must accept the ``loss=`` extra argument
    (:func:`jaxrl_reason.train.optim.build_optimizer`), which skips non-finite updates.

    The loss is ``cfg.objective``'s: :func:`rl_loss`, :func:`sft_objective_loss` or
    :func:`dpo_objective_loss`.
    ``loss_fn(model, micro_batch) -> (loss, metrics with "loss")`` replaces it; the online
    PRM (:mod:`jaxrl_reason.train.implicit_prm`) trains through the same accumulation,
    clipping and non-finite guard this way (``value_head`` is then ``None``).
    """

    def micro_loss(trainable, mb):
        params, vh = trainable
        model = nnx.merge(graphdef, params)
        if loss_fn is not None:
            return loss_fn(model, mb)
        if cfg.objective == "sft":
            return sft_objective_loss(model, mb, cfg)
        if cfg.objective == "dpo":
            return dpo_objective_loss(model, mb, cfg)
        return rl_loss(model, vh if with_value_head else None, mb, cfg)

    grad_fn = jax.value_and_grad(micro_loss, has_aux=True)

    def update(params, value_head, opt_state, batch):
        micro = split_micro(batch, num_micro)
        trainable = (params, value_head)

        def body(acc, mb):
            (_, metrics), g = grad_fn(trainable, mb)
            acc = jax.tree.map(lambda a, b: a + b / num_micro, acc, g)
            return acc, metrics

        zeros = jax.tree.map(jnp.zeros_like, trainable)
        grads, metrics = jax.lax.scan(body, zeros, micro)
        metrics = jax.tree.map(jnp.mean, metrics)
        # The optimiser (train.optim.build_optimizer) skips the whole update when the loss or
        # any gradient is non-finite, so nothing non-finite is ever written into the weights.
        updates, new_opt = optimizer.update(grads, opt_state, trainable, loss=metrics["loss"])
        new_params, new_vh = optax.apply_updates(trainable, updates)
        metrics["grad_norm"] = optax.global_norm(grads)
        # A finite gradient can still make non-finite weights (a NaN or huge learning rate, a
        # degenerate second moment): such an update is dropped whole, weights and optimiser
        # state, and flagged, so nothing non-finite is ever written into the state.
        finite = _all_finite((new_params, new_vh))
        new_params, new_vh, new_opt = jax.lax.cond(
            finite,
            lambda: (new_params, new_vh, new_opt),
            lambda: (params, value_head, opt_state),
        )
        applied = finite & jnp.isfinite(metrics["loss"]) & jnp.isfinite(metrics["grad_norm"])
        metrics["update/nonfinite"] = 1.0 - applied.astype(jnp.float32)
        return new_params, new_vh, new_opt, metrics

    return update
