"""Every estimator on multi-turn episodes: observation spans (loss mask 0 between turns) change
nothing on the policy tokens.

An episode's response interleaves actions (loss mask 1) and observations (loss mask 0, the
environment's text). The credit an action token gets must be the credit it would get if the
observation tokens were not there at all (the same episode with its observations cut out and
the policy tokens packed to the left): an observation neither resets a return (the bug
reported against verl's REINFORCE++, PR #6376, where a masked token restarts the running
return and cuts earlier turns off from the final reward) nor consumes a discount step, and
its per-token inputs (values, log-probs, rewards) are ignored.
"""

from __future__ import annotations

import functools

import jax
import numpy as np
import pytest

from jaxrl_reason import credit

# (action tokens, observation tokens) per turn, per row; the last turn has no observation.
EPISODES = [
    [(3, 2), (2, 3), (4, 0)],
    [(2, 4), (3, 0)],
    [(5, 0)],
    [(1, 1), (2, 2), (1, 3), (2, 0)],
]
GROUPS = np.array([0, 0, 1, 1], np.int32)
T = 24
S = 4
N_JUDGES = 3

# Tree estimators need a forest (rollout.strategy='tree'), not an episode layout.
FOREST_ONLY = {"treerl", "spo_tree", "sibling_grpo"}

KWARGS = {  # non-default settings that exercise the discount paths too
    "reinforce_pp": {"gamma": 0.9},
    "gae": {"gamma": 0.9, "lam": 0.8},
    "prime": {"gamma": 0.9},
    "gigpo": {"gamma": 0.9},
    "igpo": {"gamma": 0.9},
}


def _layouts(seed: int = 0):
    """``(episode, packed)``: dicts of every input in both layouts."""
    rng = np.random.default_rng(seed)
    b = len(EPISODES)
    ep = {"mask": np.zeros((b, T), np.float32), "seg": np.full((b, T), -1, np.int32)}
    pk = {"mask": np.zeros((b, T), np.float32), "seg": np.full((b, T), -1, np.int32)}
    where = np.zeros((b, T), np.int64) - 1  # episode position -> packed position
    for i, turns in enumerate(EPISODES):
        t = p = 0
        for k, (na, no) in enumerate(turns):
            for _ in range(na):
                ep["mask"][i, t], ep["seg"][i, t] = 1, k
                pk["mask"][i, p], pk["seg"][i, p] = 1, k
                where[i, t] = p
                t, p = t + 1, p + 1
            for _ in range(no):
                ep["seg"][i, t] = k  # the observation belongs to the turn it follows
                t += 1
    per_token = {
        name: rng.normal(size=(b, T)).astype(np.float32)
        for name in ("values", "old_logprobs", "ref_logprobs")
    }
    rewards = np.zeros((b, T), np.float32)
    last = [np.flatnonzero(ep["mask"][i])[-1] for i in range(b)]
    rewards[np.arange(b), last] = rng.choice([0.0, 1.0], size=b) + 0.1 * np.arange(b)
    # A mid-episode reward on an action token too (turn rewards, shaping).
    rewards[0, 1] = 0.5
    episode = {"token_rewards": rewards, **per_token}
    packed = {}
    for name, arr in episode.items():
        out = np.zeros_like(arr)
        for i in range(b):
            for t in range(T):
                if where[i, t] >= 0:
                    out[i, where[i, t]] = arr[i, t]
        packed[name] = out
    # Garbage on observation tokens: the estimator must not read it.
    obs = (ep["seg"] >= 0) & (ep["mask"] == 0)
    for name in per_token:
        episode[name] = np.where(obs, 1e3, episode[name]).astype(np.float32)
    turns = np.array([len(e) for e in EPISODES])
    turn_mask = np.arange(S)[None, :] < turns[:, None]
    per_step = {
        "step_values": rng.uniform(size=(b, S)).astype(np.float32),
        "step_scores": rng.uniform(-1, 1, size=(b, S)).astype(np.float32),
        "step_verdicts": rng.uniform(size=(b, N_JUDGES, S)) < 0.3,
        "anchor_ids": rng.integers(0, 3, size=(b, S)).astype(np.int32),
        "answer_probs": rng.uniform(0.05, 0.9, size=(b, S)).astype(np.float32),
        "turn_mask": turn_mask,
        "tree_id": np.zeros((b,), np.int32),
    }
    episode.update(per_step, mask=ep["mask"], segment_id=ep["seg"])
    packed.update(per_step, mask=pk["mask"], segment_id=pk["seg"])
    return episode, packed, where


def _run(name: str, d: dict):
    est = credit.get(name)
    fields = {**credit.inputs(name), **credit.optional_inputs(name)}
    kw = {arg: d[field] for arg, field in fields.items() if field in d}
    fn = jax.jit(functools.partial(est, **KWARGS.get(name, {})))
    adv, ret = fn(d["token_rewards"], d["mask"], GROUPS, **kw)
    return np.asarray(adv), np.asarray(ret)


@pytest.mark.parametrize("name", [n for n in credit.names() if n not in FOREST_ONLY])
def test_observation_spans_change_no_policy_token_credit(name):
    episode, packed, where = _layouts()
    adv_e, ret_e = _run(name, episode)
    adv_p, ret_p = _run(name, packed)
    m = episode["mask"] > 0
    idx = np.nonzero(m)
    got_adv = adv_e[idx]
    want_adv = adv_p[idx[0], where[idx]]
    np.testing.assert_allclose(got_adv, want_adv, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ret_e[idx], ret_p[idx[0], where[idx]], rtol=1e-5, atol=1e-5)
    assert np.all(adv_e[~m] == 0.0), "observation and padding tokens get no advantage"


def test_every_turn_sees_the_final_reward_in_reinforce_pp():
    """REINFORCE++ returns with observations: every action token of the episode sees the
    final reward; verl's literal recurrence (``reset_on_mask=True``) sees it on the last turn
    only."""
    r = np.zeros((1, 8), np.float32)
    m = np.array([[1, 1, 0, 0, 1, 0, 1, 1]], np.float32)
    r[0, 7] = 1.0
    _, ret = credit.reinforce_pp(r, m, None, gamma=0.5)
    # Policy tokens 7, 6, 4, 1, 0 -> discount steps 0, 1, 2, 3, 4.
    np.testing.assert_allclose(ret[0], [0.0625, 0.125, 0, 0, 0.25, 0, 0.5, 1.0])
    _, ret_verl = credit.reinforce_pp(r, m, None, gamma=0.5, reset_on_mask=True)
    np.testing.assert_allclose(ret_verl[0], [0, 0, 0, 0, 0, 0, 0.5, 1.0])


def test_no_interior_gap_keeps_verl_numbers():
    rng = np.random.default_rng(3)
    r = rng.normal(size=(3, 6)).astype(np.float32)
    m = np.array([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1], [1, 1, 0, 0, 0, 0]], np.float32)
    a0, r0 = credit.reinforce_pp(r, m, None, gamma=0.7)
    a1, r1 = credit.reinforce_pp(r, m, None, gamma=0.7, reset_on_mask=True)
    np.testing.assert_allclose(a0, a1, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(r0, r1, rtol=1e-6, atol=1e-6)
