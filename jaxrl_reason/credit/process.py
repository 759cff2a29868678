"""Process-reward credit: implicit PRM (Free Process Rewards), PRIME, PURE min-form, CAPO.

Estimators registered here (``credit.get(name)``): ``prime``, ``pure``, ``capo``. They follow
the common estimator contract ``fn(token_rewards [B, T], response_mask [B, T],
group_ids int32[B], **kw) -> (advantages [B, T], returns [B, T])`` (float32, zero outside
``response_mask``); method inputs are keyword arguments documented on each function.

Conventions shared with the rest of ``credit``:

* Rows with an all-zero ``response_mask`` are padding: they join no group and get zeros.
* Leave-one-out (RLOO) baselines over a group of one have nobody to leave in; here the
  baseline of a singleton is its own value, so a singleton gets no group signal (the official
  codes divide by ``K - 1 = 0``).
* The scalar outcome of a row is ``outcome`` when given, else ``sum_t token_rewards[b, t]``
  over the mask (a verifier reward placed on the last token, as ``credit`` does everywhere).

Formulas, defaults and worked examples: ``docs/algorithms.md`` (PC) sections 1, 2, 5.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxrl_reason.credit import registry
from jaxrl_reason.credit._beyond import (
    dense_ids,
    group_moments,
    group_normalize,
    rev_discounted_cumsum,
)
from jaxrl_reason.credit.segments import (
    broadcast_segments,
    masked_whiten,
    segment_ends,
    segment_reduce,
)

Array = jax.Array

__all__ = [
    "capo",
    "capo_token_rewards",
    "capo_vote",
    "implicit_prm_loss",
    "implicit_process_rewards",
    "implicit_step_rewards",
    "min_form_returns",
    "prime",
    "pure",
    "prof_keep",
    "pure_transform",
]


# --------------------------------------------------------------------------------------------
# shared small pieces
# --------------------------------------------------------------------------------------------


def _row_valid(mask: Array) -> Array:
    return jnp.any(jnp.asarray(mask, bool), axis=-1)


def _outcome(token_rewards: Array, mask: Array, outcome: Array | None) -> Array:
    if outcome is not None:
        return jnp.asarray(outcome, jnp.float32)
    m = jnp.asarray(mask, bool)
    return jnp.sum(jnp.where(m, jnp.asarray(token_rewards, jnp.float32), 0.0), axis=-1)


def _loo_mean(x: Array, group_ids: Array, valid: Array) -> Array:
    """Mean of ``x`` over the *other* valid rows of each row's group; own value for singletons."""
    ids, nb = dense_ids((group_ids,), valid)
    cnt, tot, _, _ = group_moments(x, ids, valid, nb)
    x = jnp.where(valid, jnp.asarray(x, jnp.float32), 0.0)
    return jnp.where(cnt > 1, (tot - x) / jnp.maximum(cnt - 1.0, 1.0), x)


def _last_index(mask: Array) -> Array:
    """Index of the last True of each row (0 for an empty row)."""
    m = jnp.asarray(mask, bool)
    t = m.shape[-1]
    return jnp.max(jnp.where(m, jnp.arange(t), 0), axis=-1)


def _onehot_last(mask: Array) -> Array:
    m = jnp.asarray(mask, bool)
    idx = _last_index(m)
    return (jnp.arange(m.shape[-1])[None, :] == idx[:, None]) & _row_valid(m)[:, None]


def _require(value, name: str, fn: str, what: str):
    if value is None:
        raise ValueError(f"{fn}: keyword argument {name!r} is required ({what})")
    return value


# --------------------------------------------------------------------------------------------
# Implicit PRM (Free Process Rewards, arXiv 2412.01981)
# --------------------------------------------------------------------------------------------


def implicit_process_rewards(
    logp: Array, ref_logp: Array, response_mask: Array, *, beta: float = 0.05
) -> Array:
    """Token-level implicit process rewards ``r[b, t] = beta * (logp - ref_logp)``.

    Free Process Rewards (Yuan et al. 2024, arXiv 2412.01981): a causal LM ``pi_phi`` trained
    only with outcome labels defines ``r_phi(y_t) = beta log pi_phi(y_t|y_<t) / pi_ref(...)``;
    its prefix sums are soft Q-values (``docs/algorithms.md`` (PC) 1a).

    Args:
      logp, ref_logp: float ``[B, T]`` log-probs of the sampled tokens under the PRM and the
        frozen reference.
      response_mask: ``[B, T]``.
      beta: 0.05 (ImplicitPRM ``run_ce.sh``, PRIME ``beta_train``).

    Returns: float32 ``[B, T]``, zero outside the mask.
    """
    m = jnp.asarray(response_mask, bool)
    d = jnp.asarray(logp, jnp.float32) - jnp.asarray(ref_logp, jnp.float32)
    return jnp.where(m, beta * d, 0.0)


def implicit_step_rewards(
    process_rewards: Array, segment_id: Array, response_mask: Array, num_segments: int
) -> tuple[Array, Array, Array]:
    """Step rewards and step-end Q-values of an implicit PRM.

    ``r_step[b, s] = sum_{t in step s} r[b, t]`` and ``q_end[b, s] = sum_{s' <= s} r_step``
    (the prefix value at the step's last token; ``q_end[b, 0] - 0 = r_step[b, 0]``).
    Best-of-N scoring uses ``min_s r_step`` or ``sum_s r_step`` (ImplicitPRM eval code).

    Args:
      process_rewards: float ``[B, T]`` from :func:`implicit_process_rewards`.
      segment_id: int ``[B, T]`` step of each token (:mod:`jaxrl_reason.rollout.steps`).
      response_mask: ``[B, T]``.
      num_segments: static ``S``.

    Returns: ``(r_step [B, S], q_end [B, S], step_mask bool[B, S])``; empty steps hold 0.
    """
    r_step, step_mask = segment_reduce(
        process_rewards, segment_id, response_mask, num_segments, "sum"
    )
    q_end = jnp.where(step_mask, jnp.cumsum(r_step, axis=-1), 0.0)
    return r_step, q_end, step_mask


def implicit_prm_loss(
    logp: Array, ref_logp: Array, response_mask: Array, outcome: Array, *, beta: float = 0.05
) -> Array:
    """Cross-entropy loss that trains an implicit PRM from outcome labels (scalar, float32).

    ``z_b = beta * sum_t (logp - ref_logp)[b, t]`` over the mask;
    ``L = mean_b BCE(sigmoid(z_b), o_b) = mean_b softplus(z_b) - o_b z_b`` (the stable form
    of ImplicitPRM ``CETrainer.loss_fn`` / PRIME ``compute_ce_dpo_loss_rm``).
    Gradients flow through ``logp`` only in training (pass ``ref_logp`` under stop_gradient).
    Rows with an empty mask are excluded from the mean; an empty batch gives 0.

    Args:
      logp, ref_logp: float ``[B, T]``; response_mask ``[B, T]``; outcome float ``[B]`` in
        ``{0, 1}`` (soft labels in ``[0, 1]`` work too).
    """
    m = jnp.asarray(response_mask, bool)
    d = jnp.where(m, jnp.asarray(logp, jnp.float32) - jnp.asarray(ref_logp, jnp.float32), 0.0)
    z = beta * jnp.sum(d, axis=-1)
    o = jnp.asarray(outcome, jnp.float32)
    per_row = jax.nn.softplus(z) - o * z
    valid = _row_valid(m)
    return jnp.sum(jnp.where(valid, per_row, 0.0)) / jnp.maximum(jnp.sum(valid), 1)


# --------------------------------------------------------------------------------------------
# PRIME (arXiv 2502.01456)
# --------------------------------------------------------------------------------------------

_PRIME_VARIANTS = ("paper", "code", "verl")


def _batch_norm_process(r: Array, mask: Array) -> Array:
    """PRIME ``prime_norm='batch_norm'``: ``r / (max_{b,t} |revcumsum(r)| + 1e-6)``, batch-wide."""
    r = jnp.where(jnp.asarray(mask, bool), r, 0.0)
    rc = jnp.flip(jnp.cumsum(jnp.flip(r, -1), -1), -1)
    return r / (jnp.max(jnp.abs(rc)) + 1e-6)


def _prime_code_rloo(x: Array, m: Array, group_ids: Array, valid: Array) -> Array:
    """PRIME ``masked_rloo``: ``X * K/(K-1) - (sum_j m_j)/(K-1)`` on ``M`` (0 elsewhere).

    Written as ``X - b_i + (X - m_i)/(K-1)`` with ``b_i`` the mean of the others' ``m_j`` so
    that singletons (``K = 1``) reduce to ``X - m_i`` instead of dividing by zero.
    """
    mf = jnp.asarray(m, bool)
    mi = jnp.sum(jnp.where(mf, x, 0.0), -1) / jnp.maximum(jnp.sum(mf, -1), 1)
    ids, nb = dense_ids((group_ids,), valid)
    cnt, _, _, _ = group_moments(mi, ids, valid, nb)
    others = _loo_mean(mi, group_ids, valid)
    extra = jnp.where(cnt > 1, 1.0 / jnp.maximum(cnt - 1.0, 1.0), 0.0)
    out = x - others[:, None] + (x - mi[:, None]) * extra[:, None]
    return jnp.where(mf, out, 0.0)


@registry.register(
    "prime",
    inputs={"logp": "old_logprobs", "ref_logp": "ref_logprobs"},
    # Set only with the trainer's online PRM (implicit_prm.online=True); without it the
    # policy is its own implicit PRM (logp = the behaviour log-probs).
    optional={"process_rewards": "process_rewards"},
)
def prime(
    token_rewards: Array,
    response_mask: Array,
    group_ids: Array,
    *,
    logp: Array | None = None,
    ref_logp: Array | None = None,
    process_rewards: Array | None = None,
    outcome: Array | None = None,
    variant: str = "paper",
    beta: float = 0.05,
    gamma: float = 1.0,
    process_norm: str | None = None,
    whiten: bool | None = None,
    process_coef: float | None = None,
    outcome_coef: float | None = None,
) -> tuple[Array, Array]:
    """PRIME advantages: implicit process rewards plus outcome reward, leave-one-out baselines.

    Paper form (``variant="paper"``, default; PRIME arXiv 2502.01456, advantage equation of
    the method section, quoted in ``docs/algorithms.md`` (PC) 1b)::

      A_t^i = sum_{s>=t} gamma^{s-t} [ r(y_s^i) - mean_{j != i} rbar(y^j) ]
              + r_o(y^i) - mean_{j != i} r_o(y^j)
      rbar(y^j) = mean over the tokens of y^j of r(y_t^j)

    The return is used as the advantage (no whitening).

    Code form (``variant="code"``, PRIME-RL/PRIME ``compute_rloo_returns`` + ``dp_prime.py``):
    process rewards are ``logp - ref_logp`` (beta is immaterial after batch_norm), then
    ``batch_norm`` (divide by the batch max of ``|revcumsum|`` + 1e-6); each source (process on
    the response mask, outcome on a one-hot at the last token) gets ``masked_rloo``
    ``X K/(K-1) - sum_j mean(X_j)/(K-1)``; returns are the summed discounted reverse cumsums
    and ``A = masked_whiten(R)`` over the batch. Its process baseline carries an extra
    zero-sum term ``(X - m_i)/(K-1)``: returns equal the paper's at ``t = 0`` only.

    ``variant="verl"`` (volcengine/verl ``recipe/prime``): as ``code`` but with
    ``r = beta (logp - ref_logp)``, the last valid token's process reward dropped
    (``token_level_score[:, :L-1]``), no discount, coefficients 5 and 5.

    Args:
      token_rewards: ``[B, T]`` outcome reward on tokens (its masked row sum is ``r_o``) unless
        ``outcome`` is given.
      response_mask: ``[B, T]``.
      group_ids: int32 ``[B]`` prompt of each row (K samples per prompt).
      logp, ref_logp: ``[B, T]`` PRM / reference log-probs of the sampled tokens; or
      process_rewards: ``[B, T]`` ready token process rewards (used as given, no beta; they
        win over ``logp``). The trainer's online PRM (``implicit_prm.online=True``) passes
        ``implicit_prm.beta * (log pi_prm - log pi_ref)`` here; without it the policy is its own
        implicit PRM (``logp`` = the behaviour log-probs).
      outcome: optional ``[B]`` verifiable outcome ``r_o``.
      variant: ``"paper"`` | ``"code"`` | ``"verl"``.
      beta: 0.05. gamma: 1.0 (both sources; the run script's value). ``verl`` forces 1.
      process_norm: ``"none"`` | ``"batch_norm"``; default none for paper, batch_norm else.
      whiten: default False for paper, True else.
      process_coef, outcome_coef: multipliers after the baseline; default 1 (paper, code),
        5 (verl).

    Returns: ``(advantages [B, T], returns [B, T])`` float32, zero outside the mask.
    """
    if variant not in _PRIME_VARIANTS:
        raise ValueError(f"prime: variant must be one of {_PRIME_VARIANTS}, got {variant!r}")
    m = jnp.asarray(response_mask, bool)
    valid = _row_valid(m)
    gids = jnp.asarray(group_ids, jnp.int32)
    if process_rewards is not None:
        r = jnp.where(m, jnp.asarray(process_rewards, jnp.float32), 0.0)
    else:
        _require(logp, "logp", "prime", "policy/PRM log-probs [B, T], or pass process_rewards")
        _require(ref_logp, "ref_logp", "prime", "reference log-probs [B, T]")
        scale = 1.0 if variant == "code" else beta
        r = implicit_process_rewards(logp, ref_logp, m, beta=scale)
    if variant == "verl":
        # recipe/prime fills token_level_score[:, :L-1] only: the last token's reward is lost.
        r = jnp.where(_onehot_last(m), 0.0, r)
        gamma = 1.0
    norm = process_norm or ("none" if variant == "paper" else "batch_norm")
    if norm == "batch_norm":
        r = _batch_norm_process(r, m)
    elif norm != "none":
        raise ValueError(f"prime: process_norm must be 'none' or 'batch_norm', got {norm!r}")
    do_whiten = (variant != "paper") if whiten is None else whiten
    c_p = (5.0 if variant == "verl" else 1.0) if process_coef is None else process_coef
    c_o = (5.0 if variant == "verl" else 1.0) if outcome_coef is None else outcome_coef
    o = jnp.where(valid, _outcome(token_rewards, m, outcome), 0.0)

    if variant == "paper":
        rbar = jnp.sum(r, -1) / jnp.maximum(jnp.sum(m, -1), 1)
        b_proc = _loo_mean(rbar, gids, valid)
        proc = rev_discounted_cumsum(jnp.where(m, r - b_proc[:, None], 0.0), gamma, m)
        out = o - _loo_mean(o, gids, valid)
        returns = jnp.where(m, c_p * proc + c_o * out[:, None], 0.0)
    else:
        last = _onehot_last(m)
        gt = jnp.where(last, o[:, None], 0.0)
        rm_p = _prime_code_rloo(r, m, gids, valid) * c_p
        gt_p = _prime_code_rloo(gt, last, gids, valid) * c_o
        returns = rev_discounted_cumsum(rm_p, gamma, m) + rev_discounted_cumsum(gt_p, gamma, m)
        returns = jnp.where(m, returns, 0.0)
    adv = masked_whiten(returns, m) if do_whiten else returns
    return adv, returns


# --------------------------------------------------------------------------------------------
# PURE (arXiv 2504.15275, "Stop Summation: Min-Form Credit Assignment")
# --------------------------------------------------------------------------------------------


def pure_transform(step_rewards: Array, step_mask: Array, *, temperature: float = 0.1) -> Array:
    """PURE's softmin re-weighting of step process rewards.

    ``w[b, s] = softmax_s(-r[b, s] / temperature)`` over the valid steps of row b and
    ``r*[b, s] = w[b, s] * r[b, s]``; ``sum_s r*`` tends to ``min_s r`` as
    ``temperature -> 0`` (PURE README; ``turn_process_reward_logits_to_reward`` in
    CJReinforce/PURE). The softmax is over *all* steps of the response (a global weight), as
    both official branches do; :func:`min_form_returns` gives the exact min over future steps.

    Args:
      step_rewards: float ``[B, S]`` (PURE uses ``2 p_pos - 1`` in ``[-1, 1]``).
      step_mask: bool ``[B, S]``.
      temperature: 0.1 (hard-coded on main, ``credit_assignment: 0.1`` on the verl branch).

    Returns: ``r* [B, S]`` float32, 0 on invalid steps and on rows without a valid step.
    """
    sm = jnp.asarray(step_mask, bool)
    r = jnp.where(sm, jnp.asarray(step_rewards, jnp.float32), 0.0)
    z = jnp.where(sm, -r / temperature, -jnp.inf)
    zmax = jnp.max(z, axis=-1, keepdims=True)
    zmax = jnp.where(jnp.isfinite(zmax), zmax, 0.0)
    e = jnp.where(sm, jnp.exp(z - zmax), 0.0)
    w = e / jnp.maximum(jnp.sum(e, axis=-1, keepdims=True), 1e-30)
    return w * r


def min_form_returns(step_rewards: Array, step_mask: Array) -> Array:
    """Exact min-form value ``V_k = min_{k' >= k, valid} r_{k'}`` (PURE's definition).

    Shapes: ``[B, S]`` in and out (float32; 0 on invalid steps).
    """
    sm = jnp.asarray(step_mask, bool)
    r = jnp.where(sm, jnp.asarray(step_rewards, jnp.float32), jnp.inf)
    cm = jax.lax.associative_scan(jnp.minimum, r, reverse=True, axis=r.ndim - 1)
    return jnp.where(sm, cm, 0.0)


_PURE_VARIANTS = ("main", "verl")


@registry.register("pure", inputs={"segment_id": "segment_id", "step_rewards": "step_scores"})
def pure(
    token_rewards: Array,
    response_mask: Array,
    group_ids: Array,
    *,
    step_rewards: Array | None = None,
    segment_id: Array | None = None,
    outcome: Array | None = None,
    variant: str = "main",
    temperature: float = 0.1,
    weighted: bool = True,
    baseline: str = "token",
    vr_coef: float = 1.0,
    kl: Array | None = None,
    kl_coef: float = 0.0,
    mask_separator: bool = True,
    normalize: bool = True,
    min_form: str = "soft",
) -> tuple[Array, Array]:
    """PURE advantages: softmin-transformed process rewards plus a verifiable reward (RLOO).

    The paper's body was not available; the two official code paths are implemented
    (``docs/algorithms.md`` (PC) 2b, 2c). Steps: step s of row b is the tokens with
    ``segment_id == s``; its reward sits on its last masked token (the "closing" token).

    ``variant="main"`` (OpenRLHF branch, the paper's experiments, default)::

      r*    = pure_transform(step_rewards)              (uniform 1/S_b weights if not weighted)
      O_i   = sum_s r*_s
      token baseline: rtok[i, end_s] = r*_s - n_s * sum_{j!=i} O_j / sum_{j!=i} L_j
                      (n_s = tokens of step s minus its closing token, L_j = response length)
      step  baseline: rtok[i, end_s] = r*_s - mean_{j!=i} O_j / S_j
      rtok[i, L_i - 1] += vr_coef * (v_i - mean_{j!=i} v_j),  v = outcome - 1 in {-1, 0}
      rtok -= kl_coef * kl;  G = revcumsum(rtok);  G[closing tokens] = 0 (mask_separator)
      A = G, then (normalize) the replay-buffer normalisation that ignores zeros:
          count = #valid - #(A == 0); mu = sum A / count; sd = sqrt(sum_valid (A-mu)^2 / count)
          A = (A - mu) / sd on non-zero entries (zeros stay 0). Batch-wide.

    ``variant="verl"`` (verl branch)::

      rewards = vr_coef * o * onehot(L-1) + sum_s r*_s onehot(end_s) - kl_coef * kl
      G = revcumsum(rewards)                             (min_form="soft")
      G[t] = min(rewards[t], G[t+1]) over all T positions (min_form="strict", raw r; the
            running min includes the zero rewards of non-step and padding tokens, as in code)
      A = masked_whiten(G - sum_{j!=i} sum_t G_j / ((K-1) T))    (T = padded width, as in code)

    Args:
      token_rewards, response_mask, group_ids: common arguments (outcome from token rewards).
      step_rewards: float ``[B, S]`` step process rewards ``2 p_pos - 1`` (required).
      segment_id: int ``[B, T]`` step of each token (required).
      outcome: optional ``[B]`` verifier outcome in ``{0, 1}``.
      variant: ``"main"`` | ``"verl"``. temperature: 0.1. weighted: True.
      baseline: ``"token"`` (train_pure.sh) | ``"step"`` (argparse default); main only.
      vr_coef: 1.0. kl: optional ``[B, T]`` per-token KL; kl_coef: 0.0 (script: 0.001).
      mask_separator: True (main). normalize: True (main; verl always whitens).
      min_form: ``"soft"`` | ``"strict"`` (verl only).

    Returns: ``(advantages, returns=G)`` ``[B, T]`` float32, zero outside the mask.
    """
    if variant not in _PURE_VARIANTS:
        raise ValueError(f"pure: variant must be one of {_PURE_VARIANTS}, got {variant!r}")
    _require(step_rewards, "step_rewards", "pure", "step process rewards [B, S]")
    _require(segment_id, "segment_id", "pure", "step index of each token [B, T]")
    m = jnp.asarray(response_mask, bool)
    b, t = m.shape
    valid = _row_valid(m)
    gids = jnp.asarray(group_ids, jnp.int32)
    s = jnp.shape(step_rewards)[1]
    seg = jnp.asarray(segment_id, jnp.int32)
    ends, step_mask = segment_ends(seg, m, s)
    pos = jnp.arange(t)[None, :]
    end_tok = broadcast_segments(ends.astype(jnp.float32), seg, m).astype(jnp.int32)
    closing = m & (seg >= 0) & (seg < s) & (pos == end_tok)
    o = jnp.where(valid, _outcome(token_rewards, m, outcome), 0.0)
    n_steps = jnp.sum(step_mask, -1).astype(jnp.float32)
    sr = jnp.where(step_mask, jnp.asarray(step_rewards, jnp.float32), 0.0)
    if min_form == "strict" and variant == "verl":
        rstar = sr
    elif min_form not in ("soft", "strict"):
        raise ValueError(f"pure: min_form must be 'soft' or 'strict', got {min_form!r}")
    elif weighted:
        rstar = pure_transform(sr, step_mask, temperature=temperature)
    else:
        rstar = sr / jnp.maximum(n_steps, 1.0)[:, None]
    kl_term = 0.0 if kl is None else kl_coef * jnp.where(m, jnp.asarray(kl, jnp.float32), 0.0)

    if variant == "main":
        big_o = jnp.sum(rstar, -1)
        length = jnp.sum(m, -1).astype(jnp.float32)
        if baseline == "token":
            # sum_{j!=i} O_j / sum_{j!=i} L_j; singletons fall back to their own ratio.
            o_sum = _loo_mean(big_o, gids, valid)
            l_sum = _loo_mean(length, gids, valid)
            beta_tok = o_sum / jnp.maximum(l_sum, 1.0)
            n_tok, _ = segment_reduce(jnp.ones((b, t)), seg, m, s, "count")
            step_val = rstar - beta_tok[:, None] * jnp.maximum(n_tok - 1.0, 0.0)
        elif baseline == "step":
            per_step = big_o / jnp.maximum(n_steps, 1.0)
            step_val = rstar - _loo_mean(per_step, gids, valid)[:, None]
        else:
            raise ValueError(f"pure: baseline must be 'token' or 'step', got {baseline!r}")
        step_val = jnp.where(step_mask, step_val, 0.0)
        rtok = jnp.where(closing, broadcast_segments(step_val, seg, m), 0.0)
        v = o - 1.0
        vr = vr_coef * (v - _loo_mean(v, gids, valid))
        rtok = rtok + jnp.where(_onehot_last(m), vr[:, None], 0.0) - kl_term
        g = jnp.where(m, rev_discounted_cumsum(rtok, 1.0, m), 0.0)
        if mask_separator:
            g = jnp.where(closing, 0.0, g)
        adv = g
        if normalize:
            nz = m & (g != 0)
            count = jnp.sum(nz).astype(jnp.float32)
            mu = jnp.sum(jnp.where(m, g, 0.0)) / jnp.maximum(count, 1.0)
            sd = jnp.sqrt(jnp.sum(jnp.where(m, jnp.square(g - mu), 0.0)) / jnp.maximum(count, 1.0))
            adv = jnp.where(nz, (g - mu) / (sd + 1e-8), 0.0)
        return adv, g

    rewards = jnp.where(closing, broadcast_segments(rstar, seg, m), 0.0)
    rewards = rewards + jnp.where(_onehot_last(m), vr_coef * o[:, None], 0.0) - kl_term
    if min_form == "strict":
        # verl branch: G[t] = min(rewards[t], G[t+1]) from the padded end, zeros included.
        g = jax.lax.associative_scan(jnp.minimum, rewards, reverse=True, axis=1)
    else:
        g = rev_discounted_cumsum(rewards, 1.0, m)
    g = jnp.where(m, g, 0.0)
    row_sum = jnp.sum(g, -1) / t
    base = _loo_mean(row_sum, gids, valid)
    adv = masked_whiten(jnp.where(m, g - base[:, None], 0.0), m)
    return adv, g


# --------------------------------------------------------------------------------------------
# CAPO (arXiv 2508.02298): generative-PRM step verdicts -> token penalties
# --------------------------------------------------------------------------------------------

_VOTES = ("majority", "intersection", "union")


def capo_vote(step_verdicts: Array, judge_mask: Array | None = None, *, rule: str = "majority"):
    """Combines N generative-PRM critiques into one wrong-step verdict per step.

    Args:
      step_verdicts: bool ``[B, N, S]``: critique n flags step s of response b as wrong.
      judge_mask: optional bool ``[B, N]``: critiques that parsed (default all).
      rule: ``"majority"``: wrong when flagged by more than half of the valid critiques
        (strict ``> N/2``; the paper's exact threshold is unconfirmed);
        ``"intersection"``: flagged by every valid critique; ``"union"``: by any.

    Returns: bool ``[B, S]``; False for rows without a valid critique.
    """
    v = jnp.asarray(step_verdicts, bool)
    jm = jnp.ones(v.shape[:2], bool) if judge_mask is None else jnp.asarray(judge_mask, bool)
    votes = jnp.sum(v & jm[:, :, None], axis=1)
    n = jnp.sum(jm, axis=1)[:, None]
    if rule == "majority":
        return 2 * votes > n
    if rule == "intersection":
        return (votes == n) & (n > 0)
    if rule == "union":
        return votes > 0
    raise ValueError(f"capo_vote: rule must be one of {_VOTES}, got {rule!r}")


def capo_token_rewards(
    outcome: Array,
    wrong_steps: Array,
    segment_id: Array,
    response_mask: Array,
    *,
    w_whole: float = 2.0,
    w_process: float = 1.0,
) -> Array:
    """CAPO token rewards ``R[b, t] = r_v[b] W_whole - 1[t in a wrong step] W_process``.

    Args:
      outcome: ``[B]`` rule-based verifier reward ``r_v`` in ``{0, 1}``.
      wrong_steps: bool ``[B, S]`` from :func:`capo_vote`.
      segment_id: int ``[B, T]``; response_mask ``[B, T]``.
      w_whole, w_process: 2 and 1. The paper asks for ``W_whole > W_process`` so that a
        correct answer with flawed steps still beats a wrong answer; the exact values are
        unconfirmed (no official code is released).

    Returns: float32 ``[B, T]``, zero outside the mask.
    """
    m = jnp.asarray(response_mask, bool)
    wrong_tok = broadcast_segments(jnp.asarray(wrong_steps, jnp.float32), segment_id, m)
    o = jnp.asarray(outcome, jnp.float32)
    return jnp.where(m, o[:, None] * w_whole - wrong_tok * w_process, 0.0)


@registry.register("capo", inputs={"segment_id": "segment_id", "step_verdicts": "step_verdicts"})
def capo(
    token_rewards: Array,
    response_mask: Array,
    group_ids: Array,
    *,
    segment_id: Array | None = None,
    step_verdicts: Array | None = None,
    judge_mask: Array | None = None,
    outcome: Array | None = None,
    vote: str = "majority",
    w_whole: float = 2.0,
    w_process: float = 1.0,
    normalize: str = "group",
    eps: float = 1e-6,
) -> tuple[Array, Array]:
    """CAPO: token rewards from voted generative-PRM critiques, group-normalised.

    ``R[b, t] = r_v W_whole - 1[t in T_err] W_process`` (:func:`capo_token_rewards`, with
    ``T_err`` from :func:`capo_vote`). How the paper turns ``R`` into advantages is
    unconfirmed (code unreleased); default ``normalize="group"`` whitens the token rewards
    over all masked tokens of the row's group (``(R - mean) / (std_unbiased + eps)``, the
    token-level reading of GRPO); ``"none"`` returns ``R`` itself.

    Args:
      segment_id: int ``[B, T]`` step of each token (required).
      step_verdicts: bool ``[B, N, S]`` critique verdicts (True = wrong step; required).
      judge_mask: optional bool ``[B, N]``. outcome: optional ``[B]`` ``r_v``.
      vote: ``"majority"`` | ``"intersection"`` | ``"union"``.

    Returns: ``(advantages, returns=R)`` ``[B, T]`` float32, zero outside the mask.
    """
    _require(segment_id, "segment_id", "capo", "step index of each token [B, T]")
    _require(step_verdicts, "step_verdicts", "capo", "bool [B, N, S] critique verdicts")
    m = jnp.asarray(response_mask, bool)
    o = _outcome(token_rewards, m, outcome)
    wrong = capo_vote(step_verdicts, judge_mask, rule=vote)
    r = capo_token_rewards(o, wrong, segment_id, m, w_whole=w_whole, w_process=w_process)
    if normalize == "none":
        return r, r
    if normalize != "group":
        raise ValueError(f"capo: normalize must be 'group' or 'none', got {normalize!r}")
    b, t = m.shape
    gids = jnp.broadcast_to(jnp.asarray(group_ids, jnp.int32)[:, None], (b, t)).reshape(-1)
    flat_m = m.reshape(-1)
    ids, nb = dense_ids((gids,), flat_m)
    adv = group_normalize(r.reshape(-1), ids, flat_m, nb, std="unbiased", eps=eps)
    return adv.reshape(b, t), r


# --------------------------------------------------------------------------------------------
# PROF (arXiv 2509.03403): process-consistency filter
# --------------------------------------------------------------------------------------------


def prof_keep(
    step_scores,
    step_mask,
    outcome,
    group_ids,
    *,
    n_remove: int,
    len_coef: float = 0.0,
    min_steps: int = 2,
    max_steps: int = 30,
):
    """PROF's filter: which responses to keep (host NumPy; amazon-science/PROF-GRPO
    ``filter_trajectories``, quoted in the design notes)::

      mu   = mean of step_scores over all valid steps of the batch
      c[b] = mean_s 2 (p[b, s] - mu) (2 o[b] - 1)  -  len_coef 1[n_b < min_steps or n_b > max_steps]
      per group (K rows): n_rm = min(n_remove, K); delta = #correct - #wrong
      n_pos = min(n_rm, round((delta + n_rm) / 2))          (round half to even, as Python)
      n_pos > 0: drop the n_pos correct rows with the lowest c, then n_rm - n_pos wrong ones
      else:      drop the n_rm wrong rows with the lowest c

    A correct response with low step scores, or a wrong one with high scores, has a low ``c``
    (its process and outcome disagree) and goes first, keeping correct and wrong balanced.
    Worked example (one group of 8, two steps each, n_remove = 4): scores a [.9,.8] b [.3,.4]
    c [.7,.9] d [.2,.6] e [.95,.95] (correct), f [.1,.2] g [.8,.9] h [.5,.3] (wrong) keep
    {a, e, f, h}.

    Args:
      step_scores: ``float[B, S]`` step scores in ``[0, 1]``; step_mask ``bool[B, S]``.
      outcome: ``float[B]`` in ``{0, 1}``; group_ids ``int[B]``.
      n_remove: responses dropped per group (PROF's ``prof_filter``; 4 of 8 in the paper).
      len_coef: PROF's ``len_step_reward_coef`` (0 in the yaml default, 10 in the run script).

    Returns: ``bool[B]`` True = keep. Rows without a valid step count as ``c = 0``.
    """
    import numpy as np

    p = np.asarray(step_scores, np.float64)
    m = np.asarray(step_mask, bool)
    o = np.asarray(outcome, np.float64) > 0.5
    g = np.asarray(group_ids)
    mu = p[m].mean() if m.any() else 0.0
    n_steps = m.sum(-1)
    sign = np.where(o, 1.0, -1.0)
    c = np.where(m, 2.0 * (p - mu), 0.0).sum(-1) / np.maximum(n_steps, 1) * sign
    c = c - len_coef * ((n_steps < min_steps) | (n_steps > max_steps))
    keep = np.ones(len(o), bool)
    for gid in np.unique(g):
        rows = np.flatnonzero(g == gid)
        n_rm = min(int(n_remove), len(rows))
        if n_rm <= 0:
            continue
        pos, neg = rows[o[rows]], rows[~o[rows]]
        n_pos = min(n_rm, round((len(pos) - len(neg) + n_rm) / 2))
        # Stable sorts: ties drop the earlier row, deterministically.
        if n_pos > 0:
            drop_pos = pos[np.argsort(c[pos], kind="stable")[:n_pos]]
            drop_neg = neg[np.argsort(c[neg], kind="stable")[: n_rm - n_pos]]
            keep[drop_pos] = False
            keep[drop_neg] = False
        else:
            keep[neg[np.argsort(c[neg], kind="stable")[:n_rm]]] = False
    return keep
