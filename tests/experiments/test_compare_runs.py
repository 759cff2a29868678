"""experiments.compare_runs: x axes for comparisons at equal tokens or wall-clock."""

import json

import pytest

from experiments import compare_runs

ROWS = [
    {"step": 0, "eval/accuracy": 0.2},
    {"step": 1, "time/step_s": 10.0, "rollout/decoded_tokens_total": 100.0},
    {"step": 2, "time/step_s": 5.0, "rollout/decoded_tokens_total": 180.0, "eval/accuracy": 0.4},
]


def test_x_positions_by_step_tokens_and_wall_clock():
    assert compare_runs.x_positions(ROWS, "step") == [0.0, 1.0, 2.0]
    assert compare_runs.x_positions(ROWS, "tokens") == [0.0, 100.0, 180.0]
    assert compare_runs.x_positions(ROWS, "wall") == [0.0, 10.0, 15.0]
    with pytest.raises(ValueError, match="--x 'x'"):
        compare_runs.x_positions(ROWS, "x")


def test_cli_plots_eval_against_tokens(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    out = tmp_path / "cmp.png"
    assert (
        compare_runs.main([str(run), "--keys", "eval/accuracy", "--x", "tokens", "--out", str(out)])
        == 0
    )
    assert out.stat().st_size > 0
    assert "0.200 -> 0.400" in capsys.readouterr().out
