"""Generated arithmetic: structural train / held-out disjointness, determinism, answers."""

import numpy as np
import pytest

from jaxrl_reason.data import ArithmeticTask, make_task, problem_split


def test_default_splits_partition_the_two_digit_space():
    train, test = ArithmeticTask("train"), ArithmeticTask("test")
    ptr, pte = train.problems(), test.problems()
    assert not ptr & pte
    # Every 2-digit problem (90 * 90 operand pairs, 3 ops) is in exactly one split.
    assert len(ptr) + len(pte) == 90 * 90 * 3 == len(train) + len(test)
    assert 0.08 < len(test) / (len(train) + len(test)) < 0.12
    for ex in test[:50]:
        a, op, b = ex.meta["a"], ex.meta["op"], ex.meta["b"]
        assert problem_split(np.array(a), op, np.array(b), 0.1)
        assert 10 <= a <= 99 and 10 <= b <= 99
        assert int(ex.answer) == {"+": a + b, "-": a - b, "*": a * b}[op]
        assert ex.prompt == f"What is {a} {op} {b}?"


def test_deterministic_order_from_the_seed():
    a = [e.id for e in ArithmeticTask("train", seed=3)[:20]]
    b = [e.id for e in ArithmeticTask("train", seed=3)[:20]]
    c = [e.id for e in ArithmeticTask("train", seed=4)[:20]]
    assert a == b and a != c
    # The seed orders problems; it never moves one across the split.
    assert ArithmeticTask("test", seed=3).problems() == ArithmeticTask("test", seed=4).problems()


def test_split_is_a_property_of_the_problem_not_the_config():
    # A problem held out under one operand range is held out under every range.
    small = ArithmeticTask("test", low=10, high=50, ops=("+",)).problems()
    big_train = ArithmeticTask("train", low=10, high=99, ops=("+", "*")).problems()
    assert not small & big_train


def test_sampled_large_space_is_disjoint_and_deterministic():
    kw = dict(low=1000, high=9999, ops=("+", "-"), seed=7)
    train = ArithmeticTask("train", num_examples=3000, **kw)
    test = ArithmeticTask("test", num_examples=500, **kw)
    assert len(train) == 3000 and len(test) == 500
    assert len(train.problems()) == 3000  # no duplicates
    assert not train.problems() & test.problems()
    again = ArithmeticTask("test", num_examples=500, **kw)
    assert [e.id for e in test] == [e.id for e in again]


def test_options_and_errors():
    t = ArithmeticTask("train", ops=("-",), allow_negative=False, num_examples=200)
    assert len(t) == 200 and all(int(e.answer) >= 0 for e in t)
    with pytest.raises(ValueError, match="ops="):
        ArithmeticTask(ops=("/",))
    with pytest.raises(ValueError, match="split="):
        ArithmeticTask("validation")
    with pytest.raises(ValueError, match="only"):
        ArithmeticTask("test", low=10, high=12, num_examples=100)
    with pytest.raises(ValueError, match="unknown task 'arith'"):
        make_task("arith")


def test_prompt_and_verify():
    t = ArithmeticTask("test", ops=("+",))
    ex = t[0]
    msgs = t.build_prompt(ex)
    assert [m["role"] for m in msgs] == ["system", "user"]
    assert "####" in msgs[0]["content"] and msgs[1]["content"] == ex.prompt
    right, wrong = f"... so #### {ex.answer}", f"#### {int(ex.answer) + 1}"
    assert t.verify(right, ex) == 1.0 and t.verify(wrong, ex) == 0.0
    np.testing.assert_array_equal(t.verify_batch([right, wrong], [ex, ex]), [1.0, 0.0])
    boxed = ArithmeticTask("test", prompt_format="boxed")
    assert "\\boxed" in boxed.build_prompt(ex)[0]["content"]
