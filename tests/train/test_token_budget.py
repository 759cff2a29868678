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


def test_time_budget_stops_on_training_wall_clock_and_resume_keeps_it(tmp_path):
    # A budget below any step's time ends the run after its first step; the running total is
    # the sum of time/step_s (evaluation excluded) and travels in the checkpoint metadata.
    rows = _run(tmp_path / "t", "--config.total_steps=10", "--config.train.time_budget_s=1e-6")
    assert [r["step"] for r in rows] == [1]
    assert rows[0]["time/train_wall_total_s"] == pytest.approx(rows[0]["time/step_s"])
    steps = sorted(int(d) for d in os.listdir(tmp_path / "t" / "checkpoints") if d.isdigit())
    assert steps == [1]
    # Resumed with the same budget, the restored total is already past it: no more steps.
    again = _run(
        tmp_path / "t", "--config.total_steps=10", "--config.train.time_budget_s=1e-6", resume=True
    )
    assert again == []
    assert [r["step"] for r in _rows(tmp_path / "t")] == [1]


def test_negative_time_budget_is_refused():
    with pytest.raises(ConfigError, match=r"train.time_budget_s=-1.0: must be a number >= 0"):
        load_config(CONFIG, ["--config.train.time_budget_s=-1"])
