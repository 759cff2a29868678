"""Canonical answer keys: real answer formats, garbage, and a time bound on pathological input."""

import threading
import time

import numpy as np
import pytest

from jaxrl_reason.rewards.canonical import NONE_KEY, canonical_key, canonical_keys, keys_to_ids

pytest.importorskip("math_verify")

SAME = {
    "1/2": [
        "1/2",
        "0.5",
        "\\frac{1}{2}",
        "$\\frac{1}{2}$",
        "\\boxed{\\frac12}",
        "2/4",
        "0.50",
        "\\dfrac{1}{2}",
        "The answer is $\\boxed{\\frac{2}{4}}$.",
    ],
    "1234": ["1234", "1,234", "1{,}234", "1\\,234", "$1\\,234$", "1234.0", "\\boxed{1,234}"],
    "1000000": ["1,000,000", "1000000.00", "$1,000,000$"],
    "2469/2": ["1,234.50", "1234.5", "\\frac{2469}{2}"],
    "0": ["0", "-0", "-0.0", "0.000", "\\boxed{0}"],
    "3": ["3", "3.0", "3.00", "\\boxed{3}", "The answer is 3."],
    "-1/2": ["-0.5", "-\\frac{1}{2}", "\\boxed{-\\frac{1}{2}}", "-1/2"],
    "-3": ["-3", "\\(-3\\)", "$-3$"],
    "sqrt(2)": ["\\sqrt{2}", "$\\sqrt{2}$", "2^{1/2}"],
    "3/4": ["\\dfrac{3}{4}", "0.75", "\\boxed{\\tfrac{3}{4}}"],
    "1024": ["\\boxed{2^{10}}", "1024", "$1{,}024$"],
    "6": ["\\boxed{3!}", "6"],
    "2*sqrt(2)": ["\\boxed{\\sqrt{8}}", "$2\\sqrt{2}$"],
    "1/20": ["\\boxed{5\\%}", "0.05"],
    "{1/2, 1}": ["\\boxed{\\{\\frac{2}{4},1\\}}", "$\\{0.5, 1\\}$"],
}


@pytest.mark.parametrize("want", sorted(SAME))
def test_equivalent_formats_share_one_key(want):
    assert canonical_keys(SAME[want]) == [want] * len(SAME[want])


def test_distinct_answers_differ():
    keys = [canonical_key(s) for s in ["1/2", "1/3", "0.3333", "2", "-2", "\\pi", "\\{1,2\\}"]]
    assert len(set(keys)) == len(keys)
    # Keys are exact: a tolerant verifier may equate 1/3 and 0.3333, counting must not.
    assert canonical_key("1/3") == "1/3" and canonical_key("0.3333") == "3333/10000"


@pytest.mark.parametrize(
    "garbage", [None, "", "   ", "abc", "\\boxed{}", "no idea", "((((", "}{", "$$", "\\frac{"]
)
def test_garbage_is_none_key(garbage):
    assert canonical_key(garbage) == NONE_KEY


def test_string_fallback_and_errors():
    assert canonical_key("No Idea", fallback="string") == "str:no idea"
    assert canonical_key("", fallback="string") == NONE_KEY
    with pytest.raises(TypeError, match="str or None"):
        canonical_key(3)
    with pytest.raises(ValueError, match="fallback"):
        canonical_key("1", fallback="x")


PATHOLOGICAL = [
    "(" * 5000 + "1" + ")" * 5000,
    "\\frac{" * 3000,
    "9" * 100_000,
    "\\boxed{2^{2^{100}}}",
    "\\boxed{10^{10^{10}}}",
    "\\boxed{1000000000!}",
    "\\boxed{(10^{100})^{100}}",
    "$" + "x^" * 2000 + "2$",
    "\\boxed{" + "+".join(["1"] * 3000) + "}",
]


@pytest.mark.parametrize("text", PATHOLOGICAL, ids=range(len(PATHOLOGICAL)))
def test_pathological_input_is_bounded(text):
    t = time.perf_counter()
    key = canonical_key(text, timeout_s=2)
    assert isinstance(key, str)
    assert time.perf_counter() - t < 4.0  # the 2 s alarm plus slack on a shared machine


def test_huge_power_is_not_evaluated():
    assert canonical_key("\\boxed{2^{2^{100}}}") == "2**(2**100)"


def test_works_outside_the_main_thread():
    out = {}
    th = threading.Thread(target=lambda: out.setdefault("k", canonical_key("\\frac{3}{6} ")))
    th.start()
    th.join(30)
    assert out["k"] == "1/2"


def test_keys_to_ids_first_seen():
    ids = keys_to_ids(["12", "12", "7", "3", "7"])
    assert ids.dtype == np.int32
    np.testing.assert_array_equal(ids, [0, 0, 1, 2, 1])


def test_time_limit_cuts_a_slow_parse(monkeypatch):
    import jaxrl_reason.rewards.canonical as canonical

    def slow(expr):
        time.sleep(10)
        return "never"

    monkeypatch.setattr(canonical, "_normalise", slow)
    t = time.perf_counter()
    assert canonical_key("\\boxed{12345.678}", timeout_s=1) == NONE_KEY
    assert time.perf_counter() - t < 3.0


def test_answer_tokens_of_the_last_box():
    from jaxrl_reason.rewards.canonical import answer_token_mask, last_boxed_span

    pieces = ["x \\boxed{1} so ", "\\boxed{", "\\frac", "{1}{", "2", "}", "}", " done"]
    text = "".join(pieces)
    span = last_boxed_span(text)
    assert text[span[0] : span[1]] == "\\frac{1}{2}"
    mask = answer_token_mask(pieces, span, length=10)
    np.testing.assert_array_equal(mask, [0, 0, 1, 1, 1, 1, 0, 0, 0, 0])
    assert last_boxed_span("no box") is None and last_boxed_span("\\boxed{12") is None
    assert not answer_token_mask(pieces, None).any()
