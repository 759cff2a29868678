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
