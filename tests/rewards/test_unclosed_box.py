"""An unclosed final ``\\boxed{`` is a malformed answer: it extracts nothing and earns nothing."""

import numpy as np
import pytest

from jaxrl_reason.rewards import extract
from jaxrl_reason.rewards.verify import verify, verify_batch

UNCLOSED = [
    "\\boxed{42",  # cut off by the token limit right before the brace
    "so the result is \\boxed{42",
    "The answer is \\boxed{42",  # the answer_is reading must not rescue it either
    "The answer is \\boxed{42.",
    "\\boxed{41} no wait \\boxed{42",  # an earlier closed box is not the final answer
    "\\fbox{42",
    "\\boxed{\\frac{1}{2} + {42",  # nested, still unbalanced
]


@pytest.mark.parametrize("text", UNCLOSED)
def test_unclosed_box_extracts_nothing(text):
    assert extract.extract_boxed(text) is None
    assert extract.has_unclosed_box(text)
    assert extract.extract_answer(text, "auto") == (None, None)
    assert extract.extract_answer(text, "boxed") == (None, None)


@pytest.mark.parametrize("text", UNCLOSED)
def test_unclosed_box_earns_no_reward(text):
    assert verify(text, "42", worker=None) == 0.0
    assert verify(text, "42", fmt="boxed", worker=None) == 0.0


def test_unclosed_box_batch_scores_zero_next_to_a_closed_one():
    out = verify_batch(["\\boxed{42", "\\boxed{42}", "#### 42"], ["42"] * 3, worker=None)
    np.testing.assert_array_equal(out, [0.0, 1.0, 1.0])


@pytest.mark.parametrize(
    "text, want",
    [
        ("\\boxed{42}", "42"),
        ("\\boxed{4}2", "4"),  # only the box's content
        ("\\boxed{\\boxed{42}}", "42"),  # the last opener is the inner, closed box
        ("\\boxed{41} and then \\boxed{42}", "42"),
        ("\\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),  # escaped braces are content, not structure
    ],
)
def test_balanced_boxes_still_extract(text, want):
    assert extract.extract_boxed(text) == want
    assert not extract.has_unclosed_box(text)
    assert extract.extract_answer(text, "auto") == (want, "boxed")


def test_hash_still_wins_over_an_unclosed_box():
    # "####" has priority under auto; an unclosed box after it does not cancel it.
    assert extract.extract_answer("#### 42\n\\boxed{4", "auto") == ("42", "hash")


def test_a_strict_format_other_than_boxed_is_unaffected():
    # The caller asked for the last number explicitly: the box's brace is not its business.
    assert extract.extract_answer("\\boxed{42", "last_number") == ("42", "last_number")
    assert not extract.has_unclosed_box("no box at all, 42")
