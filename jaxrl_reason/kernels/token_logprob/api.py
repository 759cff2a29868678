"""Public entry point: validates inputs, flattens the batch axes and dispatches by backend."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxrl_reason.kernels.token_logprob import _common

IMPLS = ("reference", "xla", "pallas")


def default_impl(backend: str | None = None) -> str:
    """``"pallas"`` on GPU and TPU, ``"xla"`` elsewhere (interpret-mode Pallas is test-only)."""
    backend = backend or jax.default_backend()
    return "pallas" if backend in ("gpu", "cuda", "rocm", "tpu") else "xla"


def _validate(hidden, lm_head, labels, temperature):
    if hidden.ndim < 1:
        raise ValueError(f"hidden must be [..., D]; got a scalar of shape {hidden.shape}.")
    if lm_head.ndim != 2:
        raise ValueError(f"lm_head must be [D, V]; got shape {lm_head.shape}.")
    if hidden.shape[-1] != lm_head.shape[0]:
        raise ValueError(
            f"hidden's last axis ({hidden.shape[-1]}) must equal lm_head's first axis "
            f"({lm_head.shape[0]}); pass lm_head as [D, V] (e.g. embedding.T)."
        )
    if labels.shape != hidden.shape[:-1]:
        raise ValueError(
            f"labels must have shape hidden.shape[:-1] = {hidden.shape[:-1]}; got {labels.shape}."
        )
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise TypeError(f"labels must be an integer array of token ids; got {labels.dtype}.")
    for name, x in (("hidden", hidden), ("lm_head", lm_head)):
        if not jnp.issubdtype(x.dtype, jnp.floating):
            raise TypeError(f"{name} must be floating point (float32/bfloat16); got {x.dtype}.")
    if isinstance(temperature, jax.Array) or not float(temperature) > 0:
        raise ValueError(
            f"temperature must be a positive Python float (static); got {temperature!r}."
        )


def token_logprob(
    hidden: jax.Array,
    lm_head: jax.Array,
    labels: jax.Array,
    *,
    temperature: float = 1.0,
    impl: str | None = None,
    with_self_certainty: bool = False,
    block_sizes=None,
) -> tuple[jax.Array, ...]:
    """Fused per-token log-prob and entropy from hidden states, tiled over the vocabulary.

    Computes, for ``z = hidden @ lm_head / temperature`` (float32 accumulation) and
    ``p = softmax(z)``, the label log-prob ``log p[label]`` and the entropy ``-sum p log p``,
    and optionally the self-certainty ``KL(Uniform || p) = -log V - (1/V) sum_j log p_j``
    (INTUITOR, Zhao et al. 2025, arXiv 2505.19590, Eq. for ``Self-certainty``). All outputs come
    from one pass over vocabulary tiles with an online logsumexp, so peak memory is
    ``O(N * tile)``, never ``O(N * V)``. Differentiable w.r.t. ``hidden`` and ``lm_head``
    (every output) through a ``jax.custom_vjp`` whose backward pass recomputes the logits tile
    by tile.

    Args:
      hidden: ``[..., D]`` float32 or bfloat16 hidden states (after the final norm). Gather
        only the positions that carry loss before calling: the cost is linear in ``N``.
      lm_head: ``[D, V]`` LM head weights (``embedding.T`` for tied embeddings).
      labels: ``int[...]`` (shape ``hidden.shape[:-1]``) ids in ``[0, V)``; out-of-range ids
        give ``logprob = -lse`` (no column matches) in the tiled paths.
      temperature: positive Python float; logits are divided by it.
      impl: ``None`` (``"pallas"`` on GPU/TPU, ``"xla"`` on CPU), ``"reference"``, ``"xla"``
        or ``"pallas"`` (on CPU it runs the GPU kernels in interpret mode: slow, for tests).
      with_self_certainty: also return the self-certainty.
      block_sizes: optional implementation-specific tiling: an ``int`` vocabulary chunk for
        ``"xla"``; a ``pallas_gpu.GpuBlocks`` / ``pallas_tpu.TpuBlocks`` for ``"pallas"``.

    Returns:
      ``(logprobs, entropy)`` or ``(logprobs, entropy, self_certainty)``, float32 ``[...]``.
    """
    _validate(hidden, lm_head, labels, temperature)
    impl = impl or default_impl()
    if impl == "reference":
        from jaxrl_reason.kernels.token_logprob.reference import token_logprob_reference

        return token_logprob_reference(
            hidden,
            lm_head,
            labels,
            temperature=temperature,
            with_self_certainty=with_self_certainty,
        )
    if impl == "xla":
        from jaxrl_reason.kernels.token_logprob import xla

        plan = xla.plan(temperature, with_self_certainty, block_sizes)
    elif impl == "pallas":
        if jax.default_backend() == "tpu":
            from jaxrl_reason.kernels.token_logprob import pallas_tpu as backend
        else:
            from jaxrl_reason.kernels.token_logprob import pallas_gpu as backend
        plan = backend.plan(temperature, with_self_certainty, block_sizes)
    else:
        raise ValueError(f"impl must be None or one of {IMPLS}; got {impl!r}.")

    batch_shape = hidden.shape[:-1]
    h2 = hidden.reshape(-1, hidden.shape[-1])
    out = _common.fused(h2, lm_head, labels.reshape(-1).astype(jnp.int32), plan)
    out = tuple(o.reshape(batch_shape) for o in out)
    return out if with_self_certainty else out[:2]
