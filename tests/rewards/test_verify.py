"""Answer extraction and time-limited equivalence on real formats and adversarial output."""

import threading
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxrl_reason.rewards import extract
from jaxrl_reason.rewards.verify import (
    MathVerifyWorker,
    is_pathological,
    parse_number,
    verify,
    verify_batch,
)

# --- extraction ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, fmt, want",
    [
        ("so 3 + 4 = 7\n#### 7", "hash", "7"),
        ("#### 5\nwait, redo.\n#### 1,234.", "hash", "1,234"),  # last marker, full stop dropped
        (
            "$\\boxed{\\frac{1}{2}}$ and \\boxed{\\frac{\\sqrt{3}}{2}}",
            "boxed",
            "\\frac{\\sqrt{3}}{2}",
        ),
        ("\\boxed{\\{1, 2\\}}", "boxed", "\\{1, 2\\}"),  # escaped braces are content
        ("So the answer is -12.5 meters.", "answer_is", "-12.5 meters"),
        ("Final answer: 42", "answer_is", "42"),
        ("we get 12 then 1,000 and finally -3/4", "last_number", "-3/4"),
        ("no digits here", "auto", None),
        ("\\boxed{7} but #### 8", "auto", "8"),  # priority: #### before \boxed
        ("The answer is 9", "hash", None),  # strict format: no ####
    ],
)
def test_extract_answer(text, fmt, want):
    assert extract.extract_answer(text, fmt)[0] == want


def test_extract_unclosed_and_deep_boxes_return_none_fast():
    assert extract.extract_boxed("\\boxed{1 + {2}") is None
    deep = "\\boxed{" + "{" * 10_000 + "1" + "}" * 10_001
    many_unclosed = ("\\boxed{" + "a" * 1_000) * 300
    t = time.perf_counter()
    assert extract.extract_boxed(deep) is None
    assert extract.extract_boxed(many_unclosed) is None
    assert extract.extract_boxed("x" * 1_000_000 + "\\boxed{5}") == "5"
    assert time.perf_counter() - t < 0.5


def test_extraction_stats():
    stats = extract.extraction_stats(["#### 1", "\\boxed{2}", "it is 3", "none"])
    assert stats["coverage"] == 0.75
    assert stats["method/hash"] == stats["method/boxed"] == stats["method/last_number"] == 0.25
    assert extract.extraction_stats(["#### 1", "it is 3"], "hash")["coverage"] == 0.5
    assert extract.extraction_stats([])["coverage"] == 0.0


def test_extract_rejects_unknown_format():
    with pytest.raises(ValueError, match="fmt='xml'"):
        extract.extract_answer("#### 1", "xml")


# --- fast numeric path -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "s, want",
    [
        ("1,234", 1234),
        ("-1,234.50", -2469 / 2),
        ("$18", 18),
        ("\\$18.00", 18),
        ("18 dollars", 18),
        ("\\text{18 eggs}", 18),
        ("50%", 50),
        ("50\\%", 50),
        ("\\frac{3}{4}", 0.75),
        ("\\dfrac34", 0.75),
        ("-\\frac{1}{2}", -0.5),
        ("3/4", 0.75),
        ("x = -7", -7),
        ("90^\\circ", 90),
        (".5", 0.5),
        ("about 5 km/h", 5),
        ("5x", None),  # algebra, not a unit: left to math-verify
        ("2 pi", None),  # a math word, not a unit
        ("\\frac1234", None),  # LaTeX reads \frac{1}{2}34
        ("1,2", None),  # not a thousands separator
        ("1/0", None),
        ("9" * 101, None),
    ],
)
def test_parse_number(s, want):
    got = parse_number(s)
    assert (got is None) if want is None else (got == pytest.approx(want))


def test_parse_number_has_no_catastrophic_backtracking():
    # Letter runs after a number once made the unit regex backtrack exponentially.
    t = time.perf_counter()
    for s in ["18 " + "ab" * 150 + "1", "18 " + "a b " * 90 + "!", "1 " + "x" * 390 + "1"]:
        assert parse_number(s) is None
    assert time.perf_counter() - t < 0.1


# --- equivalence on real answer formats ------------------------------------------------------


@pytest.mark.parametrize(
    "response, gold, want",
    [
        # GSM8K: gold "1234", response with thousands separators and the #### marker.
        ("Total is 1000 + 234.\n#### 1,234", "1234", 1.0),
        ("#### 1234", "1,234", 1.0),
        ("She makes $18 every day.\n#### $18", "18", 1.0),
        ("#### 18.00", "18", 1.0),
        ("#### 17", "18", 0.0),
        ("The temperature dropped to -5 degrees.\n#### -5", "-5", 1.0),
        ("#### 5", "-5", 0.0),
        ("so it is \u22125", "-5", 1.0),  # Unicode minus, last-number fallback
        ("The answer is 25%.", "25", 1.0),
        ("The answer is 12 eggs.", "12", 1.0),
        # MATH: fractions and LaTeX.
        ("Thus $\\boxed{\\frac{1}{2}}$.", "0.5", 1.0),
        ("Thus $\\boxed{\\dfrac{3}{4}}$.", "\\frac34", 1.0),
        ("$\\boxed{-\\frac{2}{3}}$", "-\\frac{2}{3}", 1.0),
        ("$\\boxed{\\frac{2}{3}}$", "-\\frac{2}{3}", 0.0),
        ("$\\boxed{2\\sqrt{2}}$", "\\sqrt{8}", 1.0),
        ("$\\boxed{x^2 + 2x + 1}$", "(x+1)^2", 1.0),
        ("$\\boxed{\\frac{\\sqrt{3}}{2}}$", "\\frac{\\sqrt3}{2}", 1.0),
        ("$\\boxed{\\pi}$", "3.14", 0.0),
        ("$\\boxed{(1, 2)}$", "(1,2)", 1.0),
        ("", "3", 0.0),
    ],
)
def test_verify_real_formats(response, gold, want):
    # A generous per-item limit: symbolic checks take seconds on a loaded 2-core machine, and
    # this test is about the answer, not the time limit (tested below).
    assert verify(response, gold, timeout_s=30.0) == want


def test_verify_batch_dtype_shape_and_values():
    out = verify_batch(["#### 3", "#### 4", "\\boxed{\\frac{6}{2}}"], ["3", "3", "3"])
    assert out.dtype == np.float32 and out.shape == (3,)
    np.testing.assert_array_equal(out, [1.0, 0.0, 1.0])
    with pytest.raises(ValueError, match="2 responses and 1 answers"):
        verify_batch(["a", "b"], ["1"])


def test_verify_batch_from_a_worker_thread():
    # math-verify's signal.alarm only works on the main thread; the worker process makes the
    # symbolic path usable from any thread (e.g. an async reward thread).
    out = {}
    t = threading.Thread(
        target=lambda: out.setdefault("r", verify_batch(["\\boxed{2\\sqrt{2}}"], ["\\sqrt{8}"]))
    )
    t.start()
    t.join(60)
    np.testing.assert_array_equal(out["r"], [1.0])


# --- adversarial output ----------------------------------------------------------------------

ADVERSARIAL = [
    "#### " + "9" * 50_000,  # a very long number
    "The answer is " + "1" * 5_000 + ".",
    "\\boxed{" + "{" * 10_000 + "1" + "}" * 10_000 + "}",  # deeply nested braces
    "(" * 10_000 + "1" + ")" * 10_000,
    "#### 9**9**9**9",  # huge exponents
    "\\boxed{9^{9^{9^{9}}}}",
    "\\boxed{10^{1000000}}",
    "\\boxed{999999!}",
    "\\boxed{(9999!)!}",  # passes the pre-filters: the timeout has to stop it
    "\\boxed{(10^{99})!}",  # passes the pre-filters; math-verify's own alarm stops it
    "\\boxed{\\binom{10^{50}}{10^{49}}}",
    "\\boxed{" + "x+" * 3_000 + "1}",
    "#### " + "1/" * 20_000 + "1",
    "\x00\x01\ufffd \\boxed{\\frac{1}{0}}",
    "\\boxed{}" * 1_000,
]


@pytest.mark.parametrize("gold", ["18", "x + 1"])
def test_adversarial_output_scores_zero_within_the_time_limit(gold):
    timeout = 2.0
    t0 = time.perf_counter()
    out = verify_batch(ADVERSARIAL, [gold] * len(ADVERSARIAL), timeout_s=timeout)
    elapsed = time.perf_counter() - t0
    np.testing.assert_array_equal(out, np.zeros(len(ADVERSARIAL), np.float32))
    # Each item is bounded by the per-item limit (+ a worker restart when one was killed);
    # most never reach math-verify at all.
    assert elapsed < len(ADVERSARIAL) * (timeout + 1.0)
    assert elapsed < 30.0


def test_pathological_filter_lets_ordinary_math_through():
    ok_answers = ["(x^2)^3", "e^{x^2}", "x^2y^2", "2^{10}", "\\frac{1}{2004!}", "1" * 100]
    for ok in ok_answers:
        assert not is_pathological(ok), ok
    for bad in ["9^9^9", "9**(9**9)", "10^{100000}", "50000!", "{" * 65, "1" * 101]:
        assert is_pathological(bad), bad


_HANGING_WORKER = """
import json, sys, time
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    r = json.loads(line)
    if r["p"] == "HANG":
        time.sleep(1000)  # stands in for C code that no signal can interrupt
    print(json.dumps({"i": r["i"], "s": float(r["p"] == r["g"])}), flush=True)
"""


class _HangingWorker(MathVerifyWorker):
    _WORKER_CODE = _HANGING_WORKER


def test_worker_is_killed_on_timeout_and_restarted():
    w = _HangingWorker(timeout_s=0.5)
    try:
        assert w.equal("a", "a") == 1.0
        t0 = time.perf_counter()
        assert w.equal("HANG", "a") == 0.0
        assert time.perf_counter() - t0 < 2.0
        assert w.num_timeouts == 1
        # The next item gets a fresh worker and a real answer.
        assert w.equal("b", "b") == 1.0
        assert w.num_restarts == 2
    finally:
        w.close()


def test_verify_batch_with_two_workers_matches_one():
    responses = ["\\boxed{2\\sqrt{2}}", "\\boxed{x+1}", "#### 4", "\\boxed{\\sqrt{2}}"] * 2
    golds = ["\\sqrt{8}", "1+x", "4", "\\sqrt{8}"] * 2
    want = np.array([1, 1, 1, 0] * 2, np.float32)
    np.testing.assert_array_equal(verify_batch(responses, golds, num_workers=2), want)
    np.testing.assert_array_equal(verify_batch(responses, golds, worker=None), want)


def test_verify_batch_time_budget_skips_only_the_slow_path():
    out = verify_batch(
        ["#### 7", "\\boxed{2\\sqrt{2}}", "#### 8"], ["7", "\\sqrt{8}", "7"], max_batch_s=0.0
    )
    np.testing.assert_array_equal(out, [1.0, 0.0, 0.0])


# --- properties ------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300), st.sampled_from(["18", "-3/4", "x+1"]))
def test_arbitrary_text_never_raises(text, gold):
    for fmt in extract.ANSWER_FORMATS:
        extract.extract_answer(text, fmt)
    assert verify(text, gold, slow_path=False) in (0.0, 1.0)


@settings(max_examples=200, deadline=None)
@given(st.integers(-(10**12), 10**12), st.integers(1, 10**6))
def test_integers_with_separators_and_offsets(n, delta):
    gold = str(n)
    assert verify(f"so\n#### {n:,}", gold) == 1.0
    assert verify(f"The answer is ${n:,}.00.", gold) == 1.0
    assert verify(f"#### {n + delta}", gold) == 0.0
