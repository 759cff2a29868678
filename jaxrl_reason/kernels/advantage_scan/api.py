"""Token-level advantage scans: validation and dispatch by backend."""

from __future__ import annotations

import jax
import jax.numpy as jnp

IMPLS = ("reference", "xla", "associative", "pallas")


def _default_impl():
    return "pallas" if jax.default_backend() in ("gpu", "tpu") else "xla"


def _check(name_shape_pairs, gamma, lam=None):
    shapes = {n: x.shape for n, x in name_shape_pairs}
    first_name, first = name_shape_pairs[0]
    if first.ndim != 2:
        raise ValueError(f"{first_name} must be [B, T]; got shape {first.shape}.")
    for n, s in shapes.items():
        if s != first.shape:
            raise ValueError(f"{n} must have the shape of {first_name} {first.shape}; got {s}.")
    for pname, p in (("gamma", gamma), ("lam", lam)):
        if p is None:
            continue
        if isinstance(p, jax.Array) or not 0.0 <= float(p) <= 1.0:
            raise ValueError(f"{pname} must be a Python float in [0, 1]; got {p!r}.")


def _resolve(impl):
    impl = impl or _default_impl()
    if impl not in IMPLS:
        raise ValueError(f"impl must be None or one of {IMPLS}; got {impl!r}.")
    return impl


def gae(rewards, values, mask, *, gamma: float, lam: float, impl: str | None = None):
    """Generalised advantage estimation over token rows, unwhitened.

    GAE (Schulman et al. 2016, arXiv 1506.02438, Eq. 16) with the masking of verl's
    ``compute_gae_advantage_return``: positions where ``mask`` is False (observation tokens,
    padding) are skipped, so ``V_next`` and ``A_next`` come from the next *unmasked* token::

        delta_t = r_t + gamma * V_next - V_t;   A_t = delta_t + gamma * lam * A_next

    Args:
      rewards: ``[B, T]`` token-level rewards (float32/bfloat16).
      values: ``[B, T]`` critic values ``V(s_t)``.
      mask: ``[B, T]`` bool/int, True on tokens the policy generated.
      gamma, lam: Python floats in [0, 1].
      impl: ``None`` (Pallas on GPU/TPU, ``"xla"`` on CPU), ``"reference"``, ``"xla"``
        (``lax.scan``), ``"associative"`` (``lax.associative_scan``) or ``"pallas"``.

    Returns:
      ``(advantages, returns)`` float32 ``[B, T]``, ``returns = advantages + values``; both
      zero where ``mask`` is False. Whitening is the caller's choice (``credit.masked_whiten``).
    """
    _check([("rewards", rewards), ("values", values), ("mask", mask)], gamma, lam)
    impl = _resolve(impl)
    if impl == "reference":
        from jaxrl_reason.kernels.advantage_scan.reference import gae_reference

        return gae_reference(rewards, values, mask, gamma=gamma, lam=lam)
    if impl == "pallas":
        from jaxrl_reason.kernels.advantage_scan import pallas

        return pallas.gae(rewards, values, mask, gamma=gamma, lam=lam)
    from jaxrl_reason.kernels.advantage_scan import xla

    method = "associative" if impl == "associative" else "scan"
    return xla.gae(rewards, values, mask, gamma=gamma, lam=lam, method=method)


def discounted_cumsum(x, mask, *, gamma: float, impl: str | None = None):
    """Masked reverse discounted cumulative sum ``y_t = x_t + gamma * y_next`` over ``[B, T]``.

    ``next`` is the next position where ``mask`` is True: masked positions are skipped (their
    ``x`` ignored, no discount applied across them), the convention of :func:`gae` (it equals
    ``gae(x, 0, mask, gamma=gamma, lam=1)``). Monte-Carlo returns of token rewards, REINFORCE
    reward-to-go. Returns float32 ``[B, T]``, zero where ``mask`` is False. ``impl`` as in
    :func:`gae`.
    """
    _check([("x", x), ("mask", mask)], gamma)
    impl = _resolve(impl)
    if impl == "reference":
        from jaxrl_reason.kernels.advantage_scan.reference import discounted_cumsum_reference

        return discounted_cumsum_reference(x, mask, gamma=gamma)
    if impl == "pallas":
        from jaxrl_reason.kernels.advantage_scan import pallas

        return pallas.discounted_cumsum(x, mask, gamma=gamma)
    from jaxrl_reason.kernels.advantage_scan import xla

    method = "associative" if impl == "associative" else "scan"
    return xla.discounted_cumsum(jnp.asarray(x), mask, gamma=gamma, method=method)
