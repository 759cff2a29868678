"""arith_chain: seeded disjoint splits, true intermediate values, the oracle step verifier."""

import ml_collections
import numpy as np
import pytest

from jaxrl_reason.data import TASKS, ArithChainTask, make_task, problem_split
from jaxrl_reason.data.arith_chain import (
    chain_expression,
    chain_split,
    describe_chain,
    first_error_step,
    parse_steps,
    step_labels,
)
from jaxrl_reason.data.base import Example
from jaxrl_reason.data.build import build_task

_APPLY = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}


def _example(start, ops, operands):
    v, steps = start, []
    for op, b in zip(ops, operands, strict=True):
        v = _APPLY[op](v, b)
        steps.append(v)
    meta = {"start": start, "ops": list(ops), "operands": list(operands), "steps": steps}
    return Example(id="x", prompt="", answer=str(steps[-1]), meta=meta)


# Start with 37. Add 25, then multiply by 3, then subtract 14: 62, 186, 172.
EX = _example(37, ["+", "*", "-"], [25, 3, 14])


def test_hand_checked_example_and_prompt():
    assert EX.meta["steps"] == [62, 186, 172] and EX.answer == "172"
    assert (
        describe_chain(37, ["+", "*", "-"], [25, 3, 14])
        == "Start with 37. Add 25, then multiply by 3, then subtract 14."
    )
    assert describe_chain(5, ["-"], [3]) == "Start with 5. Subtract 3."
    assert chain_expression(37, ["+", "*", "-"], [25, 3, 14]) == "((37 + 25) * 3) - 14"
    assert chain_expression(5, ["-"], [3]) == "5 - 3"
    t = ArithChainTask("test", num_examples=2, template="{expression}|{first}|{start}|{num_ops}")
    ex = t[1]
    first = f"{ex.meta['start']} {ex.meta['ops'][0]} {ex.meta['operands'][0]}"
    assert ex.prompt == f"({first}) {ex.meta['ops'][1]} {ex.meta['operands'][1]}|{first}|" + (
        f"{ex.meta['start']}|2"
    )


def test_intermediate_values_follow_the_ops_and_stay_in_range():
    t = ArithChainTask("train", lengths=(1, 2, 3), low=10, high=99, ops="+-*", num_examples=300)
    assert t.max_value == 99 * 99
    for i, ex in enumerate(t):
        m = ex.meta
        assert len(m["ops"]) == len(m["operands"]) == len(m["steps"]) == (1, 2, 3)[i % 3]
        v = m["start"]
        assert 10 <= v <= 99
        for op, b, s in zip(m["ops"], m["operands"], m["steps"], strict=True):
            assert 10 <= b <= 99
            v = _APPLY[op](v, b)
            assert v == s and 0 <= s <= 99 * 99
        assert ex.answer == str(m["steps"][-1])
        chain = "".join(f"{op}{b}" for op, b in zip(m["ops"], m["operands"], strict=True))
        assert ex.id == f"arith_chain/{m['start']}{chain}"
        problem = describe_chain(m["start"], m["ops"], m["operands"])
        assert ex.prompt == (
            f"Compute step by step. {problem} Write one equation per line, "
            "then #### followed by the final answer."
        )
    small = ArithChainTask("train", lengths=(4,), low=1, high=9, ops="+-*", num_examples=200)
    assert small.max_value == 99
    assert all(0 <= s <= 99 for ex in small for s in ex.meta["steps"])


def test_deterministic_per_seed():
    kw = dict(lengths=(1, 2, 3), low=10, high=99, ops="+-", num_examples=50)
    a = [e.id for e in ArithChainTask("train", seed=3, **kw)]
    b = [e.id for e in ArithChainTask("train", seed=3, **kw)]
    c = [e.id for e in ArithChainTask("train", seed=4, **kw)]
    assert a == b and a != c
    assert [e for e in ArithChainTask("test", seed=3, **kw)] == [
        e for e in ArithChainTask("test", seed=3, **kw)
    ]


def test_train_and_test_are_disjoint():
    kw = dict(lengths=(1, 2, 3), low=1, high=9, ops="+-*")
    train = ArithChainTask("train", num_examples=3000, **kw).problems()
    for seed in (0, 1):
        test = ArithChainTask("test", seed=seed, num_examples=600, **kw).problems()
        assert test and not train & test
    # Length 1 uses arithmetic's split: a held-out chain is a held-out `a op b` problem.
    t1 = ArithChainTask("test", lengths=(1,), low=10, high=99, ops="+", num_examples=100)
    assert len(t1.problems()) == 100
    for start, ops, operands in t1.problems():
        assert problem_split(np.array(start), ops[0], np.array(operands[0]), 0.1)
    assert chain_split(np.array([37]), np.array([[1, 3]]), np.array([[25, 3]]), 0.5).shape == (1,)


def test_small_spaces_repeat_and_lengths_interleave():
    t = ArithChainTask("test", lengths=(1, 2), low=1, high=3, ops="+", num_examples=40)
    assert [len(e.meta["steps"]) for e in t[:4]] == [1, 2, 1, 2]
    ones = [e.id for e in t if len(e.meta["steps"]) == 1]
    assert len(ones) == 20 and len(set(ones)) < 20  # the 1-op space of 1..3 is tiny
    assert len(ArithChainTask("test", lengths=(1, 2, 3), num_examples=1)) == 1
    with pytest.raises(ValueError, match="ops="):
        ArithChainTask(ops="/")
    with pytest.raises(ValueError, match="lengths="):
        ArithChainTask(lengths=(0,))
    with pytest.raises(ValueError, match="split="):
        ArithChainTask("validation")


RIGHT = "37 + 25 = 62\n62 * 3 = 186\n186 - 14 = 172\n#### 172"


@pytest.mark.parametrize(
    "response, labels, first",
    [
        (RIGHT, [1, 1, 1], -1),
        # A slip at step 2 (carried forward correctly afterwards is still wrong at step 3).
        ("37 + 25 = 62\n62 * 3 = 176\n176 - 14 = 162\n#### 162", [1, 0, 0], 1),
        # A slip at step 2 but a right value again at step 3.
        ("37 + 25 = 62\n62 * 3 = 176\n186 - 14 = 172\n#### 172", [1, 0, 1], 1),
        # Missing lines count as wrong.
        ("37 + 25 = 62\n#### 62", [1, 0, 0], 1),
        ("#### 172", [0, 0, 0], 0),
        ("", [0, 0, 0], 0),
        # Garbage never raises.
        ("=\n= =\n\x00 ==== 9" * 3 + "9" * 5000 + "\n)(*&^", [0, 0, 0], 0),
        # Chatter around the steps; step markers and wording; final line not a step.
        (
            "Sure! Let's start with 37.\n\nStep 1: 37 + 25 = 62.\nStep 2: 62 x 3 = 186\n"
            "Then 186 - 14 gives 172\nSo the final answer is:\n#### 172",
            [1, 1, 1],
            -1,
        ),
        # Fallback to the last number on a computation line without '='; extra steps ignored.
        ("37 + 25 -> 62\n62 * 3 = 186\n186 - 14 = 172\n172 + 0 = 172", [1, 1, 1], -1),
        # The number after the *last* '=' counts; commas and a trailing period are fine.
        ("37 + 25 = 60 + 2 = 62\n62 * 3 = 186.\n186 - 14 = 1,72", [1, 1, 0], 2),
    ],
)
def test_step_labels_and_first_error(response, labels, first):
    task = ArithChainTask("test", num_examples=2)
    got = task.step_labels(response, EX)
    assert got.dtype == np.float32 and got.shape == (3,)
    np.testing.assert_array_equal(got, np.array(labels, np.float32))
    assert task.first_error_step(response, EX) == first
    assert first_error_step(response, EX.meta["steps"]) == first
    np.testing.assert_array_equal(step_labels(response, EX.meta["steps"]), got)


def test_split_steps_spans():
    task = ArithChainTask("test", num_examples=2)
    resp = "Let's go.\n37 + 25 = 62\n\n62 * 3 = 186\nok\n186 - 14 = 172\n#### 172"
    spans = task.split_steps(resp)
    assert [resp[s:e] for s, e in spans] == [
        "Let's go.\n37 + 25 = 62\n\n",
        "62 * 3 = 186\nok\n",
        "186 - 14 = 172\n#### 172",
    ]
    assert spans[0][0] == 0 and spans[-1][1] == len(resp)
    assert [v for _, _, v in parse_steps(resp)] == [62, 186, 172]
    extra = RIGHT.replace("\n####", "\n172 + 0 = 172\n####")
    assert len(task.split_steps(extra)) == 4
    merged = task.split_steps(extra, max_steps=3)
    assert [extra[s:e] for s, e in merged][2] == "186 - 14 = 172\n172 + 0 = 172\n#### 172"
    assert task.split_steps("#### 5") == [] and task.split_steps("no steps here") == []
    assert task.split_steps(None) == []  # type: ignore[arg-type]


def test_verify_final_answer():
    task = ArithChainTask("test", num_examples=2)
    assert task.verify(RIGHT, EX) == 1.0
    assert task.verify(RIGHT.replace("#### 172", "#### 171"), EX) == 0.0
    np.testing.assert_array_equal(
        task.verify_batch([RIGHT, "#### 17"], [EX, EX]), np.array([1.0, 0.0], np.float32)
    )


def test_registry_and_build_task_from_config():
    assert TASKS["arith_chain"] is ArithChainTask
    assert len(make_task("arith_chain", split="test", num_examples=5)) == 5
    cfg = ml_collections.ConfigDict(
        {
            "name": "arith_chain",
            "lengths": (1, 3),
            "low": 10,
            "high": 99,
            "ops": "+-",
            "seed": 2,
            "num_train": 64,
            "num_test": 16,
            "prompt_format": "hash",
            "system_prompt": "",
            "template": "{problem} One step per line.",
        }
    )
    train, test = build_task(cfg, "train"), build_task(cfg, "test")
    assert isinstance(train, ArithChainTask) and (len(train), len(test)) == (64, 16)
    assert train.lengths == (1, 3) and train.ops == ("+", "-") and train.seed == 2
    assert train.system_prompt == "" and train[0].prompt.endswith(". One step per line.")
    assert [len(e.meta["steps"]) for e in test[:2]] == [1, 3]
    assert not train.problems() & test.problems()
