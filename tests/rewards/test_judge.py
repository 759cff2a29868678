"""CAPO judge: parsing judgements into step verdicts, abstaining on garbage."""

from __future__ import annotations

import string
from types import SimpleNamespace

import numpy as np

from jaxrl_reason.rewards.judge import judge_prompt, parse_verdicts, verdict_array


def test_hand_written_judgement_parses():
    text = "Step 1: correct\nStep 2: wrong\nStep 3 is right\nStep 9: wrong\nStep 2: correct"
    # Step 4 is not mentioned (abstain); step 9 is out of range; step 2's first verdict wins.
    np.testing.assert_array_equal(parse_verdicts(text, 4), [1, -1, 1, 0])
    np.testing.assert_array_equal(parse_verdicts("1. incorrect\n2) OK", 3), [-1, 1, 0])
    np.testing.assert_array_equal(parse_verdicts("step 2 - Incorrect.", 2), [0, -1])


def test_garbage_judgements_abstain_everywhere():
    rng = np.random.default_rng(0)
    chars = list(string.printable)
    garbage = ["".join(rng.choice(chars, size=int(rng.integers(0, 80)))) for _ in range(200)]
    garbage += ["", "Step", "Step x: wrong", "wrong wrong", None, 17, "Step 0: wrong"]
    v = verdict_array([garbage], 5)
    assert v.shape == (1, len(garbage), 5) and not v.any()


def test_judge_prompt_lists_steps():
    p = judge_prompt("Start with 3. Add 4.", ["3 + 4 = 7\n", "#### 7"])
    assert "Problem: Start with 3. Add 4." in p
    assert "Step 1: 3 + 4 = 7\nStep 2: #### 7" in p and "2 steps" in p


class _Tok:
    def decode(self, ids, skip_special_tokens=True):
        return " ".join(str(i) for i in ids)


def _ctx(judge_fn):
    from jaxrl_reason.rewards.registry import RewardContext

    traj = SimpleNamespace(
        tokens=np.array([[5, 6, 7, 8], [9, 10, 0, 0]]),
        segment_id=np.array([[0, 0, 1, 2], [0, 0, -1, -1]]),
    )
    ex = SimpleNamespace(prompt="p", answer="1", id="x")
    return RewardContext(
        responses=["a", "b"],
        examples=[ex, ex],
        lengths=np.array([4, 2]),
        group_ids=np.array([0, 0]),
        max_len=4,
        correct=np.zeros(2, np.float32),
        keys=["<none>"] * 2,
        max_steps=4,
        trajectories=traj,
        tokenizer=_Tok(),
        judge_fn=judge_fn,
    )


def test_judge_component_verdicts_and_reward():
    from jaxrl_reason.rewards.components import judge

    seen = []

    def judge_fn(prompts):
        seen.extend(prompts)
        return [
            ["Step 2: wrong", "Step 2: wrong\nStep 3: wrong", "garbage"],
            ["Step 1: correct", "%%%", "Step 1: wrong"],
        ]

    out = judge(_ctx(judge_fn))
    assert "Step 1: 5 6\nStep 2: 7\nStep 3: 8" in seen[0] and "Step 1: 9 10" in seen[1]
    want = np.zeros((2, 3, 4), bool)
    want[0, 0, 1] = want[0, 1, 1] = want[0, 1, 2] = True
    want[1, 2, 0] = True
    np.testing.assert_array_equal(out["step_verdicts"], want)
    # Row 0: step 2 flagged by 2 of 3 (majority), steps 1 and 3 not: 2/3 ok. Row 1: 1 of 1 ok.
    np.testing.assert_allclose(out["reward"], [2 / 3, 1.0])


def test_judge_component_with_random_strings_flags_nothing():
    from jaxrl_reason.rewards.components import judge

    rng = np.random.default_rng(1)
    rand = lambda: "".join(rng.choice(list(string.printable), 40))  # noqa: E731
    out = judge(_ctx(lambda ps: [[rand() for _ in range(4)] for _ in ps]))
    assert out["step_verdicts"].shape == (2, 4, 4) and not out["step_verdicts"].any()
    np.testing.assert_array_equal(out["reward"], [1.0, 1.0])
