"""Weighted reward mixing: hand-computed totals, config validation, built-in components."""

import numpy as np
import pytest

from jaxrl_reason.rewards.mix import RewardInputs, RewardMixer, mix_rewards


def test_mix_rewards_weighted_sum_and_components():
    comps = {"correct": np.array([1.0, 0.0, 1.0]), "format": np.array([1.0, 1.0, 0.0])}
    total, parts = mix_rewards(comps, {"correct": 1.0, "format": 0.25})
    np.testing.assert_allclose(total, [1.25, 0.25, 1.0])
    assert total.dtype == np.float32
    np.testing.assert_array_equal(parts["format"], [1.0, 1.0, 0.0])  # unweighted for logging


def test_mix_rewards_validation():
    comps = {"correct": np.ones(2)}
    with pytest.raises(ValueError, match=r"\['novelty'\]"):
        mix_rewards(comps, {"correct": 1.0, "novelty": 0.1})
    with pytest.raises(ValueError, match="weight for 'correct'"):
        mix_rewards(comps, {"correct": float("nan")})
    with pytest.raises(ValueError, match="weight for 'correct'"):
        mix_rewards(comps, {"correct": "1"})
    with pytest.raises(ValueError, match="shapes"):
        mix_rewards({"a": np.ones(2), "b": np.ones(3)}, {"a": 1.0, "b": 1.0})
    with pytest.raises(ValueError, match="empty"):
        mix_rewards(comps, {})


def test_reward_mixer_builtin_components():
    responses = ["#### 12", "The answer is 12", "#### 13", "blah 12"]
    inputs = RewardInputs(
        responses=responses,
        answers=["12"] * 4,
        lengths=np.array([10, 90, 100, 50]),
        max_len=100,
    )
    mixer = RewardMixer(
        {"correct": 1.0, "format": 0.5, "overlong": 1.0}, fmt="hash", overlong_buffer=20
    )
    total, parts = mixer(inputs)
    np.testing.assert_array_equal(parts["correct"], [1, 0, 0, 0])  # strict "####" format
    np.testing.assert_array_equal(parts["format"], [1, 0, 1, 0])
    np.testing.assert_allclose(parts["overlong"], [0, -0.5, -1, 0])
    np.testing.assert_allclose(total, [1.5, -0.5, -0.5, 0.0])


def test_reward_mixer_extra_and_errors():
    inputs = RewardInputs(responses=["#### 1", "#### 2"], answers=["1", "1"])
    mixer = RewardMixer({"correct": 1.0, "novelty": 0.5})
    total, parts = mixer(inputs, extra={"novelty": np.array([0.2, 1.0])})
    np.testing.assert_allclose(total, [1.1, 0.5])
    assert set(parts) == {"correct", "novelty"}
    with pytest.raises(ValueError, match=r"unknown components \['novelty'\]"):
        mixer(inputs)
    with pytest.raises(ValueError, match="needs RewardInputs.lengths"):
        RewardMixer({"length": 1.0})(inputs)


def test_reward_mixer_kimi_length_uses_correctness():
    inputs = RewardInputs(
        responses=["#### 1", "#### 2", "#### 1"],
        answers=["1"] * 3,
        lengths=np.array([10, 20, 30]),
        group_ids=np.array([0, 0, 0]),
        max_len=64,
    )
    total, parts = RewardMixer({"correct": 1.0, "kimi_length": 1.0})(inputs)
    np.testing.assert_allclose(parts["kimi_length"], [0.5, 0.0, -0.5])
    np.testing.assert_allclose(total, [1.5, 0.0, 0.5])
