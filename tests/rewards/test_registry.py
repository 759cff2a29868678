"""Reward components by name: hand-computed totals, placement, validation, the registry."""

import os
import types

import numpy as np
import pytest

from jaxrl_reason.data.base import Example
from jaxrl_reason.rewards.registry import (
    RewardContext,
    compute_rewards,
    get_reward,
    reward_names,
)

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "..", "experiments", "configs")


def _ctx(responses, correct, *, answers=None, lengths=None, gids=None, keys=None, **kw):
    b = len(responses)
    answers = answers or ["12"] * b
    return RewardContext(
        responses=responses,
        examples=[Example(id="x", prompt="q", answer=a) for a in answers],
        lengths=np.asarray(lengths if lengths is not None else [1] * b),
        group_ids=np.asarray(gids if gids is not None else [0] * b, np.int32),
        max_len=100,
        correct=np.asarray(correct, np.float32),
        keys=keys or ["<none>"] * b,
        **kw,
    )


def test_builtin_components_weighted_sum_by_hand():
    ctx = _ctx(
        ["#### 12", "The answer is 12", "#### 13", "blah 12"],
        [1, 0, 0, 0],
        lengths=[10, 90, 100, 50],
        task=types.SimpleNamespace(verify_format="hash"),
        config={"overlong_buffer": 20},
    )
    out = compute_rewards({"correct": 1.0, "format": 0.5, "overlong": 1.0, "ttrl": 0.0}, ctx)
    np.testing.assert_array_equal(out.components["format"], [1, 0, 1, 0])
    np.testing.assert_allclose(out.components["overlong"], [0, -0.5, -1, 0])
    np.testing.assert_allclose(out.total, [1.5, -0.5, -0.5, 0.0])
    assert "ttrl" not in out.components  # weight 0 = off
    np.testing.assert_array_equal(out.bonus, 0.0)


def test_kimi_length_uses_the_verifier_outcome():
    ctx = _ctx(["a", "b", "c"], [1, 0, 1], lengths=[10, 20, 30])
    out = compute_rewards({"correct": 1.0, "kimi_length": 1.0}, ctx)
    np.testing.assert_allclose(out.components["kimi_length"], [0.5, 0.0, -0.5])
    np.testing.assert_allclose(out.total, [1.5, 0.0, 0.5])


def test_batch_penalty_and_ttrl_by_hand():
    ctx = _ctx(["a"] * 4, [0] * 4, keys=["5", "5", "7", "<none>"])
    out = compute_rewards({"batch_penalty": 0.2, "ttrl": 1.0}, ctx)
    # -(#same in group - 1) / G with G = 4; placed on the advantage, weight = c.
    np.testing.assert_allclose(out.components["batch_penalty"], [-0.25, -0.25, 0.0, 0.0])
    np.testing.assert_allclose(out.bonus, [-0.05, -0.05, 0.0, 0.0], rtol=1e-6)
    np.testing.assert_allclose(out.total, [1.0, 1.0, 0.0, 0.0])  # majority answer "5"


def test_explore_bonus_worked_example_and_reward_placement_flag():
    # research notes, outcome-based exploration worked example: N_prev = {"12": 5, "7": 1};
    # batch answers 12, 12, 7, 3; UCB-Con b0 = 0.5 with counts including the batch; c = 0.2.
    from jaxrl_reason.rewards.exploration import AnswerHistory

    hist = AnswerHistory()
    hist.observe(["x"] * 6, ["12"] * 5 + ["7"])
    ctx = _ctx(
        ["a"] * 4,
        [1, 1, 0, 0],
        keys=["12", "12", "7", "3"],
        state={"answer_history": hist},
        config={"explore": {"variant": "ucb_con", "b0": 0.5}},
    )
    out = compute_rewards({"correct": 1.0, "explore": 0.2}, ctx)
    np.testing.assert_allclose(out.bonus, [-0.024407, -0.024407, 0.041421, 0.1], atol=1e-6)
    np.testing.assert_array_equal(out.total, [1, 1, 0, 0])
    # explore.placement="reward" puts c * bonus into the reward instead.
    hist2 = AnswerHistory()
    hist2.observe(["x"] * 6, ["12"] * 5 + ["7"])
    ctx.state = {"answer_history": hist2}
    out2 = compute_rewards({"correct": 1.0, "explore": 0.2}, ctx, placement={"explore": "reward"})
    np.testing.assert_allclose(out2.total, [0.975593, 0.975593, 0.041421, 0.1], atol=1e-6)
    np.testing.assert_array_equal(out2.bonus, 0.0)


def test_errors_name_the_component():
    ctx = _ctx(["a"], [1])
    with pytest.raises(ValueError, match="unknown reward component 'novelty'"):
        compute_rewards({"novelty": 1.0}, ctx)
    with pytest.raises(ValueError, match="reward.weights.correct"):
        compute_rewards({"correct": float("nan")}, ctx)
    with pytest.raises(ValueError, match="self_certainty"):
        compute_rewards({"self_certainty": 1.0}, ctx)
    with pytest.raises(ValueError, match="arith_chain"):
        compute_rewards({"oracle_steps": 1.0}, ctx)


def test_every_registered_component_is_a_config_weight(tmp_path):
    from jaxrl_reason.train.config import load_config

    (tmp_path / "prm.json").write_text("{}")  # validation only checks the checkpoint is there

    names = reward_names()
    assert {"correct", "kimi_length", "explore", "oracle_steps", "self_certainty"} <= set(names)
    for name in names:
        # oracle_steps needs a task with oracle steps (validation says so otherwise)
        task = ["--config.task.name=arith_chain"] if name == "oracle_steps" else []
        if name == "prm":  # the PRM component needs a checkpoint (validation says so otherwise)
            task = [f"--config.prm.path={tmp_path}"]
        cfg = load_config(
            os.path.join(CONFIGS, "tiny_debug.py"), [*task, f"--config.reward.weights.{name}=0.5"]
        )
        assert cfg.reward.weights[name] == 0.5
        assert get_reward(name).placement in ("reward", "advantage")
