"""ProcessBench first-error F1 on hand-computed examples."""

import numpy as np
import pytest

from jaxrl_reason.eval.process import first_error_f1, first_error_from_scores, first_error_label


def test_f1_worked_example():
    # erroneous: labels [2,0,3,1] preds [2,1,3,-1] -> 2/4; correct: preds [-1,0,-1] -> 2/3
    out = first_error_f1([2, 1, 3, -1, -1, 0, -1], [2, 0, 3, 1, -1, -1, -1])
    assert out["acc_err"] == 0.5
    assert out["acc_cor"] == pytest.approx(2 / 3)
    assert out["f1"] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))  # 4/7
    assert out["f1"] == pytest.approx(0.571428571)
    assert (out["num_err"], out["num_cor"]) == (4, 3)


def test_f1_degenerate_sets():
    assert first_error_f1([-1, -1], [-1, -1])["f1"] == 0.0  # no erroneous sample
    assert first_error_f1([1], [1]) == {
        "acc_err": 1.0,
        "acc_cor": 0.0,
        "f1": 0.0,
        "num_err": 1.0,
        "num_cor": 0.0,
    }


def test_first_error_from_scores():
    scores = np.array([[0.9, 0.7, 0.3, 0.8], [0.9, 0.9, 0.2, 0.1], [0.6, 0.6, 0.6, 0.6]])
    valid = np.array([[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 1]], bool)
    np.testing.assert_array_equal(first_error_from_scores(scores, valid, 0.5), [2, -1, -1])
    np.testing.assert_array_equal(first_error_from_scores(scores, valid, 0.65), [2, -1, 0])
    np.testing.assert_array_equal(first_error_label(np.array([[1, 1, 0]]), np.ones((1, 3))), [2])


@pytest.mark.parametrize(
    "response, labels, first",
    [
        ("3 + 4 = 7\n7 + 2 = 9\n#### 9", [1, 1, 0], -1),
        ("3 + 4 = 8\n8 + 2 = 10\n#### 10", [0, 0, 0], 0),
        ("3 + 4 = 7\n7 + 2 = 10\n#### 10", [1, 0, 0], 1),
        ("3 + 4 = 7\n#### 7", [0, 0, 0], 0),  # stops short of the answer
        ("3 + 4 = 7\n7 + 2 = 9\n9 + 1 = 10\n#### 10", [1, 1, 0], 2),  # runs past it
        ("The answer is 9", [0, 0, 0], 0),  # no step line: one wrong step
    ],
)
def test_oracle_response_labels(response, labels, first):
    from jaxrl_reason.data.arith_chain import ArithChainTask
    from jaxrl_reason.data.base import Example
    from jaxrl_reason.eval.process import oracle_response_labels

    task = ArithChainTask("test", num_examples=2)
    ex = Example(id="x", prompt="", answer="9", meta={"steps": [7, 9]})
    lab, valid = oracle_response_labels(task, response, ex, 3)
    n = max(len(task.split_steps(response)), 1)
    np.testing.assert_array_equal(valid, np.arange(3) < n)
    np.testing.assert_array_equal(lab, labels)
    assert int(first_error_label(lab[None], valid[None])[0]) == first


def test_oracle_labels_fold_extra_steps():
    from jaxrl_reason.data.arith_chain import ArithChainTask
    from jaxrl_reason.data.base import Example
    from jaxrl_reason.eval.process import oracle_response_labels

    task = ArithChainTask("test", num_examples=2)
    ex = Example(id="x", prompt="", answer="10", meta={"steps": [7, 9, 10]})
    lab, valid = oracle_response_labels(task, "3 + 4 = 7\n7 + 2 = 9\n9 + 1 = 10\n#### 10", ex, 2)
    np.testing.assert_array_equal(lab, [1, 1]) and np.testing.assert_array_equal(valid, [1, 1])
    lab, _ = oracle_response_labels(task, "3 + 4 = 7\n7 + 2 = 9\n9 + 1 = 11\n#### 11", ex, 2)
    np.testing.assert_array_equal(lab, [1, 0])  # the folded step is the AND of steps 1 and 2
