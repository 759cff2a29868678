"""Dense (partial-credit) and noisy verifiable rewards.

* VeRPO (Wang et al., arXiv 2601.03525, equations as summarised from v3): difficulty- and
  density-weighted partial credit over test cases or sub-answers.
* Noisy verifiers (Cai et al., arXiv 2510.00915): backward (unbiased surrogate) and forward
  (gradient-weight) corrections for known false-positive / false-negative rates.

Where a correction is a no-op. Both noisy-verifier corrections are affine in the observed
reward with positive slope (``Rhat = (R~ - rho_0) / (1 - rho_0 - rho_1)``,
``w = R~ - (1 - rho_1)``). Every estimator that subtracts a group baseline and divides by the
group std (GRPO) is invariant to such maps, so the advantages are *identical* to the
uncorrected ones (``tests/rewards/test_dense.py`` proves it exactly; only the ``eps`` added to
the std moves them, by ``O(eps)``). With a baseline but no std
(Dr. GRPO, RLOO) the forward weight is still a no-op (a pure shift) and the backward
correction only rescales by ``1 / (1 - rho_0 - rho_1)`` (an effective learning-rate change).
The corrections change learning where the reward is used without a group baseline
(REINFORCE, :func:`noisy_forward_advantage`), where it is mixed with other rewards before
normalisation, or where the scale is fixed / an EMA instead of the per-group std.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array

__all__ = [
    "check_noise_rates",
    "noisy_backward_correction",
    "noisy_forward_advantage",
    "noisy_forward_weight",
    "partial_credit",
    "verpo_advantages",
    "verpo_dense_reward",
    "verpo_test_weights",
]


# --------------------------------------------------------------------------- partial credit


def partial_credit(passes: Array, weights: Array | None = None, test_mask: Array | None = None):
    """Weighted fraction of passed tests / correct sub-answers ``sum_j w_j p_j / sum_j w_j``.

    Shapes: ``passes [..., M]`` in {0, 1} (or [0, 1]), ``weights [M]`` or ``[..., M]``
    (default uniform), ``test_mask [..., M]`` (padding tests False). Returns ``float32[...]``
    in ``[0, 1]``; 0 where no test is valid.
    """
    p = jnp.asarray(passes, jnp.float32)
    w = jnp.ones_like(p) if weights is None else jnp.broadcast_to(jnp.asarray(weights), p.shape)
    if test_mask is not None:
        w = jnp.where(jnp.asarray(test_mask, bool), w, 0.0)
    return jnp.sum(w * p, axis=-1) / jnp.maximum(jnp.sum(w, axis=-1), 1e-12)


def verpo_test_weights(
    passes: Array,
    *,
    alpha: float = 1.0,
    sigma: float = 0.1,
    delta: float = 1e-6,
    row_mask: Array | None = None,
    test_mask: Array | None = None,
) -> tuple[Array, Array, Array]:
    """VeRPO per-test weights from one group's execution results (v3 eqs. 3, 7-9).

    ``rho_j = (1/M_x) sum_rows p[row, j]`` (pass rate; rows are trajectories, or turns for
    multi-turn), ``Nhat_j = sum_j' exp(-(rho_j - rho_j')^2 / (2 sigma^2))`` (Gaussian KDE: how
    many tests share this difficulty) and ``w'_j = exp(-alpha rho_j) / (Nhat_j + delta)``:
    hard tests weigh more, clusters of equally hard tests are shared out. Recomputed for every
    group from the current rollouts. ``alpha, sigma, delta`` are not given in the summary of the
    paper (the defaults are the notes' illustrative values).

    Shapes: ``passes [..., N, M]`` (leading dims = independent groups), ``row_mask [..., N]``,
    ``test_mask [..., M]``. Returns ``(rho, nhat, w)``, each ``float32[..., M]``; ``w`` is 0
    on masked tests.
    """
    p = jnp.asarray(passes, jnp.float32)
    rm = jnp.ones(p.shape[:-1], bool) if row_mask is None else jnp.asarray(row_mask, bool)
    tm = jnp.ones(p.shape[:-2] + p.shape[-1:], bool) if test_mask is None else test_mask
    tm = jnp.asarray(tm, bool)
    n_rows = jnp.maximum(jnp.sum(rm, axis=-1, keepdims=True).astype(jnp.float32), 1.0)
    rho = jnp.sum(jnp.where(rm[..., None], p, 0.0), axis=-2) / n_rows
    d = rho[..., :, None] - rho[..., None, :]
    k = jnp.exp(-jnp.square(d) / (2.0 * sigma**2))
    nhat = jnp.sum(jnp.where(tm[..., None, :], k, 0.0), axis=-1)
    w = jnp.where(tm, jnp.exp(-alpha * rho) / (nhat + delta), 0.0)
    return rho, nhat, w


def verpo_dense_reward(passes: Array, **kwargs) -> Array:
    """VeRPO local dense reward ``R_turn(i) = sum_j w'_j p[i, j]`` (v3 eq. 10).

    ``passes [..., N, M]``; keyword arguments as :func:`verpo_test_weights`. Returns
    ``float32[..., N]``.
    """
    _, _, w = verpo_test_weights(passes, **kwargs)
    return jnp.sum(jnp.asarray(passes, jnp.float32) * w[..., None, :], axis=-1)


def verpo_advantages(
    passes: Array,
    *,
    all_passed: Array | None = None,
    num_turns: Array | None = None,
    alpha: float = 1.0,
    sigma: float = 0.1,
    delta: float = 1e-6,
    beta: float = 1.0,
    gamma: float = 1.0,
    row_mask: Array | None = None,
    test_mask: Array | None = None,
) -> tuple[Array, Array, Array]:
    """VeRPO single-turn advantages ``A_i = A_traj(i) + beta * A_turn(i)`` (v3 eqs. 11-14).

    ``R_traj(i) = 1{all tests pass} * gamma^{|tau_i|}``, ``A_traj = R_traj - mean R_traj``,
    ``A_turn = R_turn - mean R_turn`` over the group: mean-centred with no std division (the
    paper's default ``F_norm = 1``; std normalisation was worse in its ablation). For
    multi-turn, compute ``R_turn`` per turn with :func:`verpo_dense_reward` on turn rows.

    Args:
      passes: ``[..., N, M]`` test results of the final code of each trajectory.
      all_passed: ``[..., N]`` outcome (default: every valid test passed).
      num_turns: ``[..., N]`` ``|tau_i|`` (default 1).
      beta, gamma: dense-term weight and turn-efficiency decay (unknown in the paper; 1).

    Returns:
      ``(advantages, r_turn, r_traj)``, each ``float32[..., N]`` (0 on masked rows).
    """
    p = jnp.asarray(passes, jnp.float32)
    rm = jnp.ones(p.shape[:-1], bool) if row_mask is None else jnp.asarray(row_mask, bool)
    r_turn = verpo_dense_reward(
        p, alpha=alpha, sigma=sigma, delta=delta, row_mask=rm, test_mask=test_mask
    )
    if all_passed is None:
        tm = jnp.ones(p.shape[:-2] + p.shape[-1:], bool) if test_mask is None else test_mask
        all_passed = jnp.all((p > 0) | ~jnp.asarray(tm, bool)[..., None, :], axis=-1)
    turns = jnp.ones(p.shape[:-1]) if num_turns is None else jnp.asarray(num_turns)
    r_traj = jnp.asarray(all_passed, jnp.float32) * jnp.power(
        jnp.float32(gamma), jnp.asarray(turns, jnp.float32)
    )

    def centre(x):
        n = jnp.maximum(jnp.sum(rm, axis=-1, keepdims=True), 1)
        mean = jnp.sum(jnp.where(rm, x, 0.0), axis=-1, keepdims=True) / n
        return jnp.where(rm, x - mean, 0.0)

    adv = centre(r_traj) + beta * centre(r_turn)
    return adv, jnp.where(rm, r_turn, 0.0), jnp.where(rm, r_traj, 0.0)


# --------------------------------------------------------------------------- noisy verifier


def check_noise_rates(rho_0: float, rho_1: float) -> None:
    """Raises ``ValueError`` unless ``0 <= rho_0, rho_1`` and ``rho_0 + rho_1 < 1``."""
    if not (0.0 <= rho_0 < 1.0 and 0.0 <= rho_1 < 1.0):
        raise ValueError(
            f"rho_0={rho_0}, rho_1={rho_1}: false-positive / false-negative rates lie in [0, 1)"
        )
    if rho_0 + rho_1 >= 1.0:
        raise ValueError(
            f"rho_0 + rho_1 = {rho_0 + rho_1} >= 1: the verifier carries no signal; "
            "re-estimate the rates (they must sum to less than 1)"
        )


def noisy_backward_correction(reward: Array, rho_0: float, rho_1: float) -> Array:
    """Unbiased surrogate of a noisy binary reward (PGBC, Cai et al. 2025):

    ``Rhat = (R~ - rho_0) / (1 - rho_0 - rho_1)`` so that ``E[Rhat | R*] = R*``.

    ``rho_0 = P(R~ = 1 | R* = 0)`` (false positive), ``rho_1 = P(R~ = 0 | R* = 1)`` (false
    negative). **No-op under GRPO** (affine with positive slope, cancelled by per-group
    centring and std scaling); a pure rescale under Dr. GRPO / RLOO. Use it for rewards that
    are mixed before normalisation or scaled by a fixed / EMA scale.

    Shapes: any; returns float32 of ``reward``'s shape.
    """
    check_noise_rates(rho_0, rho_1)
    r = jnp.asarray(reward, jnp.float32)
    return (r - jnp.float32(rho_0)) / jnp.float32(1.0 - rho_0 - rho_1)


def noisy_forward_weight(reward: Array, rho_1: float) -> Array:
    """Forward-correction weight ``w(R~ = 1) = rho_1``, ``w(R~ = 0) = rho_1 - 1`` (PGFC).

    Multiplying ``grad log pi`` by ``w`` gives ``E[h] = (1 - rho_0 - rho_1) grad J``: the clean
    gradient's direction, needing only ``rho_1``. ``w = R~ - (1 - rho_1)`` is a shift of the
    reward, so **it is a no-op under any group-baseline estimator** (GRPO, Dr. GRPO, RLOO):
    use :func:`noisy_forward_advantage` (``w`` as the advantage itself) instead.

    Shapes: any; returns float32.
    """
    if not 0.0 <= rho_1 < 1.0:
        raise ValueError(f"rho_1={rho_1}: the false-negative rate lies in [0, 1)")
    r = jnp.asarray(reward, jnp.float32)
    return jnp.where(r > 0.5, jnp.float32(rho_1), jnp.float32(rho_1 - 1.0))


def noisy_forward_advantage(
    reward: Array, response_mask: Array, rho_1: float, *, scale: float = 1.0
) -> Array:
    """Token advantages ``A[i, t] = w(R~_i) / scale`` on the response, no group baseline.

    The form in which the forward correction is not cancelled: ``w`` is the advantage,
    divided by a fixed (or externally tracked EMA) ``scale``. Shapes: ``reward [B]``,
    ``response_mask [B, T]``; returns ``float32[B, T]``, 0 off the mask.
    """
    w = noisy_forward_weight(reward, rho_1) / jnp.float32(scale)
    return w[:, None] * jnp.asarray(response_mask, jnp.float32)
