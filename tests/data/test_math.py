"""MATH-style loader: the per-file release layout, plain JSONL, boxed gold answers."""

import json

import pytest

from jaxrl_reason.data import MathTask, load_math_records

RECORDS = {
    "algebra/2.json": {
        "problem": "Solve $2x = 1$.",
        "solution": "So $x = \\boxed{\\frac{1}{2}}$.",
        "level": "Level 1",
        "type": "Algebra",
    },
    "algebra/10.json": {
        "problem": "Compute $\\sin 60^\\circ$.",
        "solution": "First \\boxed{1} is wrong; it is $\\boxed{\\frac{\\sqrt{3}}{2}}$.",
        "level": "Level 3",
        "type": "Algebra",
    },
    "geometry/1.json": {
        "problem": "Which set?",
        "solution": "The set $\\boxed{\\{1, 2\\}}$.",
        "level": "Level 5",
        "type": "Geometry",
    },
}


@pytest.fixture
def math_tree(tmp_path):
    for rel, rec in RECORDS.items():
        p = tmp_path / "test" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(rec))
    return tmp_path


def test_release_layout(math_tree):
    t = MathTask(str(math_tree), "test")
    # Sorted by subject, then numerically (2 before 10).
    assert [e.id for e in t] == [
        "test/algebra/2.json",
        "test/algebra/10.json",
        "test/geometry/1.json",
    ]
    assert [e.answer for e in t] == ["\\frac{1}{2}", "\\frac{\\sqrt{3}}{2}", "\\{1, 2\\}"]
    assert "\\boxed" in t.build_prompt(t[0])[0]["content"]
    assert t.verify("thus $\\boxed{0.5}$", t[0]) == 1.0
    assert t.verify("thus $\\boxed{\\dfrac{\\sqrt3}{2}}$", t[1]) == 1.0
    # The split folder itself and filters.
    assert len(MathTask(str(math_tree / "test"))) == 3
    assert len(MathTask(str(math_tree), subjects=("Geometry",))) == 1
    assert len(MathTask(str(math_tree), levels=(1, 3))) == 2


def test_plain_jsonl(tmp_path):
    p = tmp_path / "mine.jsonl"
    p.write_text(
        json.dumps({"problem": "1+1?", "solution": "$\\boxed{2}$"})
        + "\n"
        + json.dumps({"problem": "2+2?", "solution": "four", "answer": "4"})
        + "\n"
        + json.dumps({"problem": "?", "solution": "no box"})
        + "\n"
    )
    t = MathTask(str(p))
    assert [e.answer for e in t] == ["2", "4"] and t.num_skipped == 1
    with pytest.raises(FileNotFoundError):
        load_math_records(str(tmp_path / "missing"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "x"}) + "\n")
    with pytest.raises(ValueError, match="bad.jsonl:1"):
        load_math_records(str(bad))


def test_shared_math_test_set(math_dir):
    t = MathTask(math_dir, "test")
    assert len(t) == 5000 and t.num_skipped == 0
    by_id = {e.id: e for e in t[:20]}
    assert by_id["test/algebra/1.json"].answer == "2"
