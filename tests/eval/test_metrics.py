"""pass@k table, maj@k example (notes section 2), distinct answers, best-of-N, summary."""

import math

import numpy as np
import pytest

from jaxrl_reason.eval import (
    best_of_n,
    distinct_answers,
    maj_at_k,
    majority_vote,
    pass_at_k,
    summarize,
)

TOL = dict(rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "n,c,k,want",
    [
        (10, 3, 5, 0.916667),
        (10, 3, 1, 0.3),
        (10, 0, 5, 0.0),
        (10, 8, 5, 1.0),
        (5, 2, 3, 0.9),
        (4, 2, 2, 0.833333),
        (200, 3, 100, 0.876884),
    ],
)
def test_pass_at_k_table(n, c, k, want):
    got = pass_at_k(n, c, k)
    assert isinstance(got, float)
    np.testing.assert_allclose(got, want, **TOL)
    exact = 1.0 - math.comb(n - c, k) / math.comb(n, k)
    np.testing.assert_allclose(got, exact, rtol=1e-12, atol=1e-12)


def test_pass_at_k_arrays_and_stability():
    n = np.array([10, 10, 10, 5, 4, 200])
    c = np.array([3, 0, 8, 2, 2, 3])
    got = pass_at_k(n, c, np.array([5, 5, 5, 3, 2, 100]))
    assert got.dtype == np.float64 and got.shape == (6,)
    np.testing.assert_allclose(got, [0.916667, 0.0, 1.0, 0.9, 0.833333, 0.876884], **TOL)
    np.testing.assert_allclose(pass_at_k(200, 3, 100), 0.8768844221105527, rtol=1e-14)
    # k broadcast over a scalar (n, c); c/n at k = 1
    np.testing.assert_allclose(pass_at_k(10, 3, np.arange(1, 11))[0], 0.3, **TOL)
    # huge n: binomials overflow floats, the product form does not
    v = pass_at_k(100_000, 1, 50_000)
    np.testing.assert_allclose(v, 0.5, atol=1e-9)


def test_pass_at_k_refuses_bad_input():
    with pytest.raises(ValueError, match=r"k=10 > n=5.*at least k samples"):
        pass_at_k(5, 0, 10)  # the official code would say 1.0 here
    with pytest.raises(ValueError, match="c"):
        pass_at_k(5, 6, 1)
    with pytest.raises(ValueError, match="k must be >= 1"):
        pass_at_k(5, 1, 0)


def test_maj_at_k_example():
    samples = ["5", "3", "5", "3", "7", "3"]
    got = [maj_at_k(samples, "3", k) for k in range(1, 7)]
    assert got == [0.0, 0.0, 0.0, 0.0, 0.0, 1.0]
    assert majority_vote(samples[:4]) == "5"  # 2-2 tie: "5" was seen first
    assert majority_vote(samples[:5]) == "5"
    assert majority_vote(samples) == "3"
    # batch form: mean over prompts
    assert maj_at_k([samples, ["1", "1", "2"]], ["3", "1"], 3) == 0.5
    with pytest.raises(ValueError, match="k=7"):
        maj_at_k(samples, "3", 7)


def test_distinct_and_best_of_n():
    assert distinct_answers(["5", "3", "5", "<none>", "<none>"]) == 3.0
    assert distinct_answers(["5", "3", "5", "<none>"], exclude=("<none>",)) == 2.0
    assert distinct_answers([["1", "1"], ["1", "2", "3"]]) == 2.0
    scores = [0.2, 0.9, 0.9, 0.1]
    correct = [True, False, True, True]
    assert best_of_n(scores, correct) == 0.0  # first of the tied maxima
    assert best_of_n(scores, correct, n=1) == 1.0
    assert best_of_n([scores, [0.0, 1.0]], [correct, [False, True]]) == 0.5


def test_summarize():
    p1 = [("5", False), ("3", True), ("5", False), ("3", True)]
    p2 = [("<none>", False), ("8", True), ("8", True), ("9", False)]
    out = summarize([p1, p2], lengths=[[10, 20, 30, 40], [5, 5, 5, 5]])
    assert out["accuracy"] == 0.5
    np.testing.assert_allclose(out["pass@1"], 0.5, **TOL)
    np.testing.assert_allclose(out["pass@2"], (1 - 1 / 6 + 1 - 1 / 6) / 2, **TOL)
    np.testing.assert_allclose(out["pass@4"], 1.0, **TOL)
    # maj@1: "5" wrong, "<none>" wrong; maj@4: "5" (tie, first) wrong, "8" right
    assert out["maj@1"] == 0.0 and out["maj@2"] == 0.0 and out["maj@4"] == 0.5
    assert out["distinct_answers"] == 2.0  # {5,3} and {8,9}: "<none>" not counted
    assert out["no_answer_rate"] == 0.125
    assert out["mean_length"] == 15.0
    with pytest.raises(ValueError, match="k=8"):
        summarize([p1], ks=[8])


def test_weighted_majority_vote():
    from jaxrl_reason.eval import weighted_majority_vote

    assert weighted_majority_vote(["a", "b", "b"], [0.9, 0.3, 0.4]) == "a"
    assert weighted_majority_vote(["a", "b", "b"], [0.6, 0.3, 0.3]) == "a"  # tie: first seen
    assert weighted_majority_vote(["a", "b", "b"], [0.5, 0.3, 0.3]) == "b"
    with pytest.raises(ValueError, match="one weight per answer"):
        weighted_majority_vote(["a"], [])
