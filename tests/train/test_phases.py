"""The phases over Trajectories: score -> assign_credit on hand-built rollouts.

The outcome-exploration worked example (G = 4 answers 12, 12, 7, 3 for a question whose
history holds 12 five times and 7 once; gold 12; UCB-Con b0 = 0.5 with counts including the
batch; c = 0.2) must give the paper's advantages ``Ahat + c * bonus`` =
[0.841617, 0.841617, -0.824603, -0.766024] on every response token.
"""

import numpy as np

from jaxrl_reason.data.base import Example
from jaxrl_reason.models.build import smollm2_tokenizer
from jaxrl_reason.rewards.exploration import AnswerHistory
from jaxrl_reason.rollout.trajectories import Trajectories
from jaxrl_reason.train import phases


class _Task:
    verify_format = "auto"

    def verify_batch(self, texts, examples):
        return np.asarray(
            [t.strip() == e.answer for t, e in zip(texts, examples, strict=True)], np.float32
        )


def _traj(tok, texts, width=6):
    rows = [tok.encode(t, add_special_tokens=False) for t in texts]
    b = len(rows)
    tokens = np.zeros((b, width), np.int32)
    mask = np.zeros((b, width), bool)
    for i, r in enumerate(rows):
        tokens[i, : len(r)] = r
        mask[i, : len(r)] = True
    lengths = mask.sum(-1).astype(np.int32)
    return Trajectories(
        prompt_tokens=np.ones((b, 2), np.int32),
        prompt_mask=np.ones((b, 2), bool),
        tokens=tokens,
        attention_mask=mask,
        loss_mask=mask.astype(np.float32),
        old_logprobs=np.zeros((b, width), np.float32),
        group_id=np.zeros(b, np.int32),
        segment_id=np.where(mask, 0, -1).astype(np.int32),
        lengths=lengths,
        finish_reason=np.zeros(b, np.int32),
    ).check()


def _scorer(tok, placement):
    hist = AnswerHistory()
    hist.observe(["q"] * 6, ["12"] * 5 + ["7"])
    return phases.Scorer(
        tokenizer=tok,
        task=_Task(),
        weights={"correct": 1.0, "explore": 0.2},
        settings={"explore": {"variant": "ucb_con", "b0": 0.5, "include_current": True}},
        max_len=6,
        placement={"explore": placement},
        state={"answer_history": hist},
    )


def test_exploration_bonus_lands_on_the_advantage_as_in_the_paper():
    tok = smollm2_tokenizer()
    texts = ["12", "12", "7", "3"]
    traj = _traj(tok, texts)
    examples = [Example(id="q", prompt="?", answer="12")]
    traj, scored = phases.score(traj, examples, _scorer(tok, "advantage"))
    np.testing.assert_array_equal(traj.reward, [1, 1, 0, 0])
    np.testing.assert_allclose(scored.bonus, [-0.024407, -0.024407, 0.041421, 0.1], atol=1e-6)
    # the reward sits on each row's last response token
    last = traj.lengths - 1
    np.testing.assert_array_equal(traj.token_rewards[np.arange(4), last], [1, 1, 0, 0])
    traj = phases.assign_credit(phases.make_credit_fn("grpo"), traj, scored.bonus)
    want = np.array([0.841617, 0.841617, -0.824603, -0.766024], np.float32)
    mask = np.asarray(traj.loss_mask) > 0
    np.testing.assert_allclose(
        np.asarray(traj.advantages), np.where(mask, want[:, None], 0.0), atol=2e-6
    )


def test_reward_placement_normalises_the_bonus_with_the_group():
    tok = smollm2_tokenizer()
    traj = _traj(tok, ["12", "12", "7", "3"])
    examples = [Example(id="q", prompt="?", answer="12")]
    traj, scored = phases.score(traj, examples, _scorer(tok, "reward"))
    r = np.array([1, 1, 0, 0]) + np.array([-0.024407, -0.024407, 0.041421, 0.1])
    np.testing.assert_allclose(traj.reward, r, atol=1e-6)
    np.testing.assert_array_equal(scored.bonus, 0.0)
    traj = phases.assign_credit(phases.make_credit_fn("grpo"), traj, scored.bonus)
    want = (r - r.mean()) / (r.std(ddof=1) + 1e-6)
    np.testing.assert_allclose(np.asarray(traj.advantages)[:, 0], want, atol=1e-5)


def test_credit_fn_names_a_missing_input_and_who_fills_it():
    import pytest

    tok = smollm2_tokenizer()
    traj = _traj(tok, ["1", "2"])
    traj = traj.replace(token_rewards=np.zeros((2, 6), np.float32))
    with pytest.raises(ValueError, match="step_values.*rollout.strategy='vine'"):
        phases.make_credit_fn("vineppo")(traj)


def _spo_traj():
    """Two rows of 6 tokens (row 1: 4 real), probabilities around rho = 0.9, 2 segments."""
    p = np.array([[0.5, 0.95, 0.3, 0.99, 0.8, 0.97], [0.97, 0.6, 0.92, 0.4, 0.5, 0.5]], np.float32)
    mask = np.array([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]], bool)
    seg = np.where(mask, np.array([0, 0, 0, 1, 1, 1]), -1).astype(np.int32)
    tr = np.zeros((2, 6), np.float32)
    tr[0, 5], tr[1, 3] = 1.0, 0.0
    return Trajectories(
        prompt_tokens=np.array([[3, 4], [5, 6]], np.int32),
        prompt_mask=np.ones((2, 2), bool),
        tokens=np.array([[7, 8, 9, 10, 11, 12], [13, 14, 15, 16, 0, 0]], np.int32),
        attention_mask=mask,
        loss_mask=mask.astype(np.float32),
        old_logprobs=np.where(mask, np.log(p), 0.0).astype(np.float32),
        group_id=np.array([0, 0], np.int32),
        segment_id=seg,
        lengths=mask.sum(-1).astype(np.int32),
        finish_reason=np.zeros(2, np.int32),
        token_rewards=tr,
        step_values=np.array([[0.25, 0.5], [0.75, 0.5]], np.float32),
        step_value_mask=np.ones((2, 2), bool),
    ).check()


def test_spo_prob_mask_becomes_the_update_mask_and_masked_tokens_get_zero_gradient(monkeypatch):
    import jax
    import jax.numpy as jnp

    from jaxrl_reason.train import step as step_lib

    traj = phases.assign_credit(phases.make_credit_fn("spo_chain", {"whiten": False}), _spo_traj())
    p = np.exp(np.asarray(traj.old_logprobs))
    want = (np.asarray(traj.loss_mask) > 0) & (p < 0.9)
    np.testing.assert_array_equal(traj.update_mask, want.astype(np.float32))
    # row 0 (R = 1): segment advantages [0.5 - 0.25, 1 - 0.5]; row 1 (R = 0): [-0.25, -0.5]
    adv = np.where(want, [[0.25] * 3 + [0.5] * 3, [-0.25] * 3 + [-0.5] * 3], 0.0)
    np.testing.assert_allclose(traj.advantages, adv, atol=1e-6)
    # grpo narrows nothing
    plain = phases.assign_credit(phases.make_credit_fn("grpo"), _spo_traj())
    assert plain.update_mask is None

    batch = phases.update_batch(traj, np.arange(2))
    np.testing.assert_array_equal(batch["response_mask"], want.astype(np.float32))
    batch["ref_logprobs"] = batch["old_logprobs"] - 0.3  # a KL term that is not 0
    # The loss as the update computes it, with the per-token log-probs / entropies as the
    # variables (the model forward replaced): every term must ignore the masked tokens.
    cfg = step_lib.LossConfig(kl_coef=0.1, entropy_coef=0.01, agg_mode="token-mean")

    def loss_of(logp, ent, b):
        monkeypatch.setattr(step_lib, "sequence_logprobs", lambda m, bb, c: (logp, ent, None))
        return step_lib.rl_loss(None, None, b, cfg)[0]

    logp0 = jnp.asarray(batch["old_logprobs"]) + 0.05  # ratio != 1: clipping inactive here
    ent0 = jnp.ones((2, 6))
    jb = {k: jnp.asarray(v) for k, v in batch.items()}
    g_lp, g_ent = jax.grad(loss_of, argnums=(0, 1))(logp0, ent0, jb)
    off = ~want
    assert np.all(np.asarray(g_lp)[off] == 0.0) and np.all(np.asarray(g_ent)[off] == 0.0)
    assert np.all(np.asarray(g_lp)[want] != 0.0)
    # the same loss over loss_mask would move those tokens (KL and entropy reach them)
    jb["response_mask"] = jnp.asarray(traj.loss_mask)
    g_lp2, _ = jax.grad(loss_of, argnums=(0, 1))(logp0, ent0, jb)
    assert np.any(np.asarray(g_lp2)[off & (np.asarray(traj.loss_mask) > 0)] != 0.0)
