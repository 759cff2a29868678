"""Losses against a NumPy port of verl's, on random ragged inputs.

Ports of ``verl/trainer/ppo/core_algos.py`` (volcengine/verl, commit b178a3cd, 2026-01-29):
``agg_loss``, ``compute_policy_loss_vanilla``, ``compute_policy_loss_gspo`` (forward value),
``kl_penalty_forward`` and ``compute_value_loss``, with torch replaced by NumPy (float64).
"""

import numpy as np
import pytest

from jaxrl_reason import losses


def verl_masked_mean(x, m):
    return (x * m).sum() / (m.sum() + 1e-8)


def verl_agg_loss(loss_mat, loss_mask, loss_agg_mode, loss_scale_factor=None):
    if loss_agg_mode == "token-mean":
        return (loss_mat * loss_mask).sum() / loss_mask.sum()
    if loss_agg_mode == "seq-mean-token-sum":
        seq_losses = (loss_mat * loss_mask).sum(-1)
        seq_mask = (loss_mask.sum(-1) > 0).astype(np.float64)
        return (seq_losses * seq_mask).sum() / seq_mask.sum()
    if loss_agg_mode == "seq-mean-token-mean":
        seq_cnt = loss_mask.sum(-1)
        seq_losses = (loss_mat * loss_mask).sum(-1) / (seq_cnt + 1e-8)
        seq_mask = (seq_cnt > 0).astype(np.float64)
        return (seq_losses * seq_mask).sum() / seq_mask.sum()
    if loss_agg_mode == "seq-mean-token-sum-norm":
        seq_losses = (loss_mat * loss_mask).sum(-1)
        if loss_scale_factor is None:
            loss_scale_factor = loss_mask.shape[-1]
        return seq_losses.sum() / loss_scale_factor
    raise ValueError(loss_agg_mode)


def verl_policy_loss_vanilla(old_log_prob, log_prob, advantages, response_mask, lo, hi, c, mode):
    negative_approx_kl = np.clip(log_prob - old_log_prob, -20.0, 20.0)
    ratio = np.exp(negative_approx_kl)
    ppo_kl = verl_masked_mean(-negative_approx_kl, response_mask)
    pg_losses1 = -advantages * ratio
    pg_losses2 = -advantages * np.clip(ratio, 1 - lo, 1 + hi)
    clip_pg_losses1 = np.maximum(pg_losses1, pg_losses2)
    pg_clipfrac = verl_masked_mean((pg_losses2 > pg_losses1).astype(np.float64), response_mask)
    pg_losses3 = -advantages * c
    clip_pg_losses2 = np.minimum(pg_losses3, clip_pg_losses1)
    pg_clipfrac_lower = verl_masked_mean(
        (clip_pg_losses1 > pg_losses3) * (advantages < 0).astype(np.float64), response_mask
    )
    pg_losses = np.where(advantages < 0, clip_pg_losses2, clip_pg_losses1)
    loss = verl_agg_loss(pg_losses, response_mask, mode)
    return loss, {
        "pg_clipfrac": pg_clipfrac,
        "ppo_kl": ppo_kl,
        "pg_clipfrac_lower": pg_clipfrac_lower,
    }


def verl_policy_loss_gspo(old_log_prob, log_prob, advantages, response_mask, lo, hi):
    negative_approx_kl = log_prob - old_log_prob
    seq_lengths = np.maximum(response_mask.sum(-1), 1)
    seq_kl = (negative_approx_kl * response_mask).sum(-1) / seq_lengths
    log_seq_ratio = np.minimum(log_prob - log_prob + seq_kl[:, None], 10.0)
    ratio = np.exp(log_seq_ratio)
    pg_losses1 = -advantages * ratio
    pg_losses2 = -advantages * np.clip(ratio, 1 - lo, 1 + hi)
    pg_losses = np.maximum(pg_losses1, pg_losses2)
    loss = verl_agg_loss(pg_losses, response_mask, "seq-mean-token-mean")
    pg_clipfrac = verl_masked_mean((pg_losses2 > pg_losses1).astype(np.float64), response_mask)
    ppo_kl = verl_masked_mean(-negative_approx_kl, response_mask)
    return loss, {"pg_clipfrac": pg_clipfrac, "ppo_kl": ppo_kl, "pg_clipfrac_lower": 0.0}


def verl_kl_penalty_forward(logprob, ref_logprob, kl_penalty):
    if kl_penalty in ("kl", "k1"):
        return logprob - ref_logprob
    if kl_penalty == "abs":
        return np.abs(logprob - ref_logprob)
    if kl_penalty in ("mse", "k2"):
        return 0.5 * np.square(logprob - ref_logprob)
    kl = np.clip(ref_logprob - logprob, -20, 20)
    return np.clip(np.exp(kl) - kl - 1, -10, 10)


def verl_value_loss(vpreds, returns, values, response_mask, cliprange_value, mode):
    vpredclipped = np.clip(vpreds, values - cliprange_value, values + cliprange_value)
    vf_losses1 = (vpreds - returns) ** 2
    vf_losses2 = (vpredclipped - returns) ** 2
    vf_loss = 0.5 * verl_agg_loss(np.maximum(vf_losses1, vf_losses2), response_mask, mode)
    return vf_loss, verl_masked_mean((vf_losses2 > vf_losses1).astype(np.float64), response_mask)


def _batch(seed, b=6, t=11):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, t + 1, size=b)
    lengths[0] = t  # at least one non-empty row
    mask = (np.arange(t)[None, :] < lengths[:, None]).astype(np.float64)
    old = -np.abs(rng.normal(size=(b, t)))
    logp = old + rng.normal(scale=0.6, size=(b, t))  # ratios well outside [0.8, 1.2] too
    adv = rng.normal(size=(b, t))
    return logp, old, adv, mask


def _f32(*arrays):
    return [a.astype(np.float32) for a in arrays]


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("mode", losses.AGG_MODES)
def test_policy_loss_ppo_matches_verl(seed, mode):
    logp, old, adv, mask = _batch(seed)
    loss, met = losses.policy_loss(
        *_f32(logp, old, adv, mask), clip_low=0.2, clip_high=0.28, dual_clip=3.0, agg_mode=mode
    )
    want, want_met = verl_policy_loss_vanilla(old, logp, adv, mask, 0.2, 0.28, 3.0, mode)
    assert want_met["pg_clipfrac_lower"] > 0 and mask.sum(-1).min() == 0  # dual clip, empty row
    np.testing.assert_allclose(loss, want, rtol=2e-5, atol=1e-6)
    for k, v in want_met.items():
        np.testing.assert_allclose(met[k], v, rtol=2e-5, atol=1e-6, err_msg=k)
    # The project's entropy / value / aggregation use the same aggregation code path.
    np.testing.assert_allclose(
        losses.aggregate(*_f32(adv, mask), mode),
        verl_agg_loss(adv, mask, mode),
        rtol=2e-5,
        atol=1e-6,
    )


@pytest.mark.parametrize("seed", [0, 1])
def test_policy_loss_gspo_matches_verl(seed):
    logp, old, adv, mask = _batch(seed)
    adv = np.repeat(adv[:, :1], adv.shape[1], axis=1)  # sequence-level advantages
    loss, met = losses.policy_loss(*_f32(logp, old, adv, mask), loss_type="gspo", clip_high=0.28)
    want, want_met = verl_policy_loss_gspo(old, logp, adv, mask, 0.2, 0.28)
    np.testing.assert_allclose(loss, want, rtol=2e-5, atol=1e-6)
    for k, v in want_met.items():
        np.testing.assert_allclose(met[k], v, rtol=2e-5, atol=1e-6, err_msg=k)


@pytest.mark.parametrize("kind", ["kl", "k1", "abs", "mse", "k2", "low_var_kl", "k3"])
def test_kl_matches_verl(kind):
    logp, old, _, _ = _batch(3)
    logp = logp * 8  # reach the clamps of k3
    got = losses.kl(*_f32(logp, old), kind)
    np.testing.assert_allclose(got, verl_kl_penalty_forward(logp, old, kind), rtol=2e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-mean"])
def test_value_loss_matches_verl(mode):
    vpred, values, ret, mask = _batch(4)
    loss, met = losses.value_loss(
        *_f32(vpred, ret, values, mask), cliprange_value=0.2, agg_mode=mode
    )
    want, want_clipfrac = verl_value_loss(vpred, ret, values, mask, 0.2, mode)
    np.testing.assert_allclose(loss, want, rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(met["vf_clipfrac"], want_clipfrac, rtol=2e-5, atol=1e-6)
