"""``train.token_budget``: runs stop at an equal generated-token budget, resumably."""

import json
import os

import pytest

from jaxrl_reason.train.config import ConfigError, load_config
from jaxrl_reason.train.loop import run_experiment

CONFIG = os.path.join(
    os.path.dirname(__file__), "..", "..", "experiments", "configs", "tiny_debug.py"
)


def _run(workdir, *extra, resume=False):
    cfg = load_config(CONFIG, ["--config.eval_every=0", "--config.export=False", *extra])
    return run_experiment(cfg, str(workdir), resume=resume)


def _rows(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_budget_stops_at_the_first_step_past_it_and_resume_keeps_the_count(tmp_path):
    ref = _run(tmp_path / "ref", "--config.total_steps=3")
    totals = [r["rollout/decoded_tokens_total"] for r in ref]
    per_step = [r["rollout/decoded_tokens"] for r in ref]
    assert totals == [sum(per_step[: i + 1]) for i in range(3)] and per_step[0] > 0
    # A budget one token past step 1's total ends the run after step 2, with a checkpoint.
    budget = int(totals[0]) + 1
    rows = _run(tmp_path / "b", "--config.total_steps=10", f"--config.train.token_budget={budget}")
    assert [r["step"] for r in rows] == [1, 2]
    assert rows[-1]["rollout/decoded_tokens_total"] == totals[1]
    # Resume counts the tokens generated before the restart: stepping on from the step-2
    # checkpoint with the budget of step 3's total stops after exactly one more step.
    budget3 = int(totals[2])
    rows = _run(
        tmp_path / "b",
        "--config.total_steps=10",
        f"--config.train.token_budget={budget3}",
        resume=True,
    )
    assert [r["step"] for r in rows] == [3]
    assert rows[0]["rollout/decoded_tokens_total"] == totals[2]
    assert [r["step"] for r in _rows(tmp_path / "b")] == [1, 2, 3]


def test_negative_budget_is_refused_before_anything_loads():
    with pytest.raises(ConfigError, match=r"train.token_budget=-5: must be a number >= 0"):
        load_config(CONFIG, ["--config.train.token_budget=-5"])
