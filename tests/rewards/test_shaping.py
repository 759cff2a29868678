"""Format reward, DAPO overlong punishment, length penalties: hand-derived values."""

import chex
import jax
import numpy as np
import pytest

from jaxrl_reason.rewards.shaping import (
    format_reward,
    kimi_length_reward,
    length_penalty,
    overlong_penalty,
)


def test_format_reward():
    rs = ["work\n#### 12", "so \\boxed{3}", "The answer is 4.", "it is 5", ""]
    np.testing.assert_array_equal(format_reward(rs, "hash"), [1, 0, 0, 0, 0])
    np.testing.assert_array_equal(format_reward(rs, "boxed"), [0, 1, 0, 0, 0])
    # "auto" accepts any explicit marker but not a bare trailing number.
    np.testing.assert_array_equal(format_reward(rs, "auto"), [1, 1, 1, 0, 0])
    assert format_reward(rs).dtype == np.float32
    with pytest.raises(ValueError, match="fmt='last_number'"):
        format_reward(rs, "last_number")


class OverlongTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_dapo_eq13_values(self):
        # L_max = 100, L_cache = 20: zero up to 80, linear to -1 at 100, -1 beyond.
        f = self.variant(lambda L: overlong_penalty(L, max_len=100, buffer_len=20))
        got = f(np.array([0, 50, 80, 81, 90, 95, 100, 101, 500]))
        want = [0, 0, 0, -1 / 20, -0.5, -0.75, -1, -1, -1]
        chex.assert_trees_all_close(got, np.array(want, np.float32), atol=1e-6)
        assert got.dtype == np.float32

    @chex.variants(with_jit=True, without_jit=True)
    def test_penalty_scale(self):
        f = self.variant(lambda L: overlong_penalty(L, 100, 20, penalty=0.5))
        chex.assert_trees_all_close(f(np.array([90])), np.array([-0.25], np.float32))

    def test_bad_buffer(self):
        with pytest.raises(ValueError, match="buffer_len=0"):
            overlong_penalty(np.array([1]), 10, 0)
        with pytest.raises(ValueError, match="buffer_len=11"):
            overlong_penalty(np.array([1]), 10, 11)


class LengthTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_linear_length_penalty(self):
        f = self.variant(lambda L: length_penalty(L, max_len=64, coef=0.5))
        chex.assert_trees_all_close(f(np.array([0, 32, 64])), np.array([0, -0.25, -0.5]))

    @chex.variants(with_jit=True, without_jit=True)
    def test_kimi_length_reward(self):
        # Group 0: lengths 10, 20, 30 -> lambda = 0.5, 0, -0.5; correct, wrong, correct.
        # Group 1: lengths 10, 40 -> lambda = 0.5, -0.5; wrong, wrong -> min(0, lambda).
        # Group 2: equal lengths -> 0.
        lengths = np.array([10, 20, 30, 10, 40, 7, 7])
        correct = np.array([1, 0, 1, 0, 0, 1, 0])
        groups = np.array([0, 0, 0, 1, 1, 2, 2], np.int32)
        f = self.variant(lambda a, b, c: kimi_length_reward(a, b, c, num_groups=3))
        want = np.array([0.5, 0.0, -0.5, 0.0, -0.5, 0.0, 0.0], np.float32)
        chex.assert_trees_all_close(f(lengths, correct, groups), want, atol=1e-6)


def test_overlong_is_differentiable_free_of_nans_at_the_edges():
    # A jitted call with the edges of every branch: no NaN from the where-branches.
    out = jax.jit(lambda L: overlong_penalty(L, 8, 8))(np.arange(0, 12))
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out[:9], -np.arange(9) / 8, atol=1e-6)
