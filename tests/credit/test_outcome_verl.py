"""Estimators against a NumPy port of verl's, on random inputs.

The ports below follow ``verl/trainer/ppo/core_algos.py`` and ``verl/utils/torch_functional.py``
of volcengine/verl (commit b178a3cd, 2026-01-29) line by line, with torch replaced by NumPy
(float64) and ``torch.std`` by ``np.std(ddof=1)``. Results are compared on masked tokens:
outside the mask verl leaves non-zero values by design, and this project zeroes them.
"""

import numpy as np
import pytest

from jaxrl_reason import credit

# --- ports of verl ---------------------------------------------------------------------------


def verl_masked_mean(values, mask):  # torch_functional.masked_mean
    return (values * mask).sum() / (mask.sum() + 1e-8)


def verl_masked_whiten(values, mask):  # torch_functional.masked_whiten (+ masked_var)
    mean = verl_masked_mean(values, mask)
    var = verl_masked_mean((values - mean) ** 2, mask)
    n = mask.sum()
    var = var * n / (n - 1)
    return (values - mean) / np.sqrt(var + 1e-8)


def verl_grpo(
    token_level_rewards, response_mask, index, epsilon=1e-6, norm_adv_by_std_in_grpo=True
):
    # core_algos.compute_grpo_outcome_advantage
    scores = token_level_rewards.sum(-1)
    out = scores.copy()
    for i in range(len(scores)):
        s = scores[index == index[i]]
        mean, std = (0.0, 1.0) if len(s) == 1 else (s.mean(), s.std(ddof=1))
        out[i] = (
            (scores[i] - mean) / (std + epsilon) if norm_adv_by_std_in_grpo else scores[i] - mean
        )
    return out[:, None] * response_mask


def verl_rloo(token_level_rewards, response_mask, index):
    # core_algos.compute_rloo_outcome_advantage
    scores = token_level_rewards.sum(-1)
    out = scores.copy()
    for i in range(len(scores)):
        s = scores[index == index[i]]
        n = len(s)
        if n > 1:
            out[i] = scores[i] * n / (n - 1) - s.mean() * n / (n - 1)
    return out[:, None] * response_mask


def verl_reinforce_pp(token_level_rewards, response_mask, gamma):
    # core_algos.compute_reinforce_plus_plus_outcome_advantage
    returns = np.zeros_like(token_level_rewards)
    running = 0.0
    for t in reversed(range(token_level_rewards.shape[1])):
        running = token_level_rewards[:, t] + gamma * running
        returns[:, t] = running
        running = running * response_mask[:, t]
    return verl_masked_whiten(returns, response_mask) * response_mask, returns


def verl_reinforce_pp_baseline(token_level_rewards, response_mask, index):
    # core_algos.compute_reinforce_plus_plus_baseline_outcome_advantage
    scores = token_level_rewards.sum(-1)
    out = scores.copy()
    for i in range(len(scores)):
        s = scores[index == index[i]]
        out[i] = scores[i] - (0.0 if len(s) == 1 else s.mean())
    tiled = out[:, None] * response_mask
    return verl_masked_whiten(tiled, response_mask) * response_mask


def verl_gae(token_level_rewards, values, response_mask, gamma, lam):
    # core_algos.compute_gae_advantage_return
    nextvalues, lastgaelam = 0.0, 0.0
    rev = []
    for t in reversed(range(token_level_rewards.shape[1])):
        delta = token_level_rewards[:, t] + gamma * nextvalues - values[:, t]
        lastgaelam_ = delta + gamma * lam * lastgaelam
        nextvalues = values[:, t] * response_mask[:, t] + (1 - response_mask[:, t]) * nextvalues
        lastgaelam = lastgaelam_ * response_mask[:, t] + (1 - response_mask[:, t]) * lastgaelam
        rev.append(lastgaelam)
    adv = np.stack(rev[::-1], axis=1)
    returns = adv + values
    return verl_masked_whiten(adv, response_mask), returns


# --- comparisons -----------------------------------------------------------------------------


def _batch(seed, b=12, t=9, mid_sequence_holes=False):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, t + 1, size=b)
    mask = (np.arange(t)[None, :] < lengths[:, None]).astype(np.float64)
    if mid_sequence_holes:  # observation spans inside responses (multi-turn)
        mask *= rng.uniform(size=(b, t)) > 0.25
        mask[:, 0] = 1.0
    # Rewards live inside the mask (verl's reward managers never put them elsewhere).
    rewards = rng.normal(size=(b, t)) * (rng.uniform(size=(b, t)) > 0.6) * mask
    values = rng.normal(size=(b, t))
    # Non-contiguous groups of sizes 1..4, with arbitrary ids.
    index = rng.choice(np.array([3, 11, -7, 500, 42]), size=b).astype(np.int32)
    return rewards, mask, values, index


def _close_on_mask(got, want, mask):
    got, m = np.asarray(got, np.float64), mask > 0
    np.testing.assert_allclose(got[m], want[m], rtol=2e-5, atol=2e-5)
    np.testing.assert_array_equal(got[~m], 0.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_group_estimators_match_verl(seed):
    r, m, _, idx = _batch(seed)
    f32 = lambda a: a.astype(np.float32)  # noqa: E731
    adv, _ = credit.grpo(f32(r), f32(m), idx)
    _close_on_mask(adv, verl_grpo(r, m, idx), m)
    adv, _ = credit.dr_grpo(f32(r), f32(m), idx)
    _close_on_mask(adv, verl_grpo(r, m, idx, norm_adv_by_std_in_grpo=False), m)
    adv, _ = credit.rloo(f32(r), f32(m), idx)
    _close_on_mask(adv, verl_rloo(r, m, idx), m)
    adv, _ = credit.reinforce_pp_baseline(f32(r), f32(m), idx)
    _close_on_mask(adv, verl_reinforce_pp_baseline(r, m, idx), m)


@pytest.mark.parametrize("seed,holes", [(0, False), (1, True), (2, True)])
def test_scan_estimators_match_verl(seed, holes):
    r, m, v, idx = _batch(seed, mid_sequence_holes=holes)
    f32 = lambda a: a.astype(np.float32)  # noqa: E731
    # verl's recurrence resets at every masked token; the default here carries the return
    # through observation spans (tests/credit/test_episodes.py) and equals verl without holes.
    adv, ret = credit.reinforce_pp(f32(r), f32(m), idx, gamma=0.9, reset_on_mask=holes)
    want_adv, want_ret = verl_reinforce_pp(r, m, 0.9)
    _close_on_mask(adv, want_adv, m)
    _close_on_mask(ret, want_ret, m)
    adv, ret = credit.gae(f32(r), f32(m), idx, values=f32(v), gamma=0.95, lam=0.9)
    want_adv, want_ret = verl_gae(r, v, m, 0.95, 0.9)
    _close_on_mask(adv, want_adv, m)
    _close_on_mask(ret, want_ret, m)
