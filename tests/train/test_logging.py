"""RunWriter: config.json, metrics.jsonl, samples, TensorBoard, PNG plots, resume truncation."""

import json
import os

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxrl_reason.train.logging import RunWriter, progress_bar, read_jsonl, update_bar


def _run(workdir, steps, *, resume_step=None, is_main=True):
    with RunWriter(workdir, resume_step=resume_step, is_main_process=is_main) as w:
        for s in steps:
            w.write_metrics(s, {"reward/mean": 0.1 * s, "loss": jnp.float32(1.0 / (s + 1))})
            w.write_samples(s, [{"prompt": "1+1=", "response": str(s), "reward": 1.0}])
            if s % 2 == 0:
                w.write_metrics(s, {"eval/accuracy": np.float64(s / 10)})


def test_metrics_samples_config_and_tensorboard(tmp_path):
    wd = str(tmp_path / "run")
    w = RunWriter(wd)
    cfg = ml_collections.ConfigDict(dict(seed=1, rollout=dict(stop=("a",))))
    w.write_config(cfg)
    row = w.write_metrics(
        3, {"loss": jnp.asarray(0.5), "n": 4, "bad": float("nan"), "acc": np.float32(0.25)}
    )
    w.write_samples(3, [{"prompt": "p", "response": "r", "reward": jnp.asarray(1.0)}])
    # Flushed immediately: readable while the writer is open.
    assert read_jsonl(os.path.join(wd, "metrics.jsonl")) == [row]
    assert row == {"step": 3, "loss": 0.5, "n": 4, "bad": None, "acc": 0.25}
    assert isinstance(row["loss"], float)
    w.close()
    assert json.load(open(os.path.join(wd, "config.json"))) == {
        "seed": 1,
        "rollout": {"stop": ["a"]},
    }
    samples = read_jsonl(os.path.join(wd, "samples.jsonl"))
    assert samples == [{"step": 3, "prompt": "p", "response": "r", "reward": 1.0}]
    events = os.listdir(os.path.join(wd, "tensorboard"))
    assert any(e.startswith("events.out.tfevents") for e in events)


def test_resume_truncates_to_restored_step(tmp_path):
    full, resumed = str(tmp_path / "full"), str(tmp_path / "resumed")
    _run(full, range(1, 5))
    _run(resumed, range(1, 4))  # crashed after logging step 3 ...
    _run(resumed, range(3, 5), resume_step=2)  # ... but the last checkpoint was step 2
    for name in ("metrics.jsonl", "samples.jsonl"):
        a = open(os.path.join(full, name)).read()
        b = open(os.path.join(resumed, name)).read()
        assert a == b and a.count("\n") > 0


def test_fresh_run_replaces_old_files(tmp_path):
    wd = str(tmp_path / "run")
    _run(wd, range(1, 4))
    _run(wd, range(1, 2))
    assert [r["step"] for r in read_jsonl(os.path.join(wd, "metrics.jsonl"))] == [1]


def test_only_main_process_writes(tmp_path):
    wd = str(tmp_path / "worker1")
    _run(wd, range(1, 3), is_main=False)
    assert not os.path.exists(wd)


def test_plots_one_png_per_curve(tmp_path):
    wd = str(tmp_path / "run")
    with RunWriter(wd, tensorboard=False) as w:
        for s in range(1, 6):
            w.write_metrics(s, {"reward/mean": s, "loss": 1.0 / s})
        w.write_metrics(5, {"eval/accuracy": 0.4})
        paths = w.write_plots()
    names = sorted(os.path.basename(p) for p in paths)
    assert names == ["eval_accuracy.png", "loss.png", "reward_mean.png"]
    for p in paths:
        with open(p, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_metric_values_must_be_scalars(tmp_path):
    with (
        RunWriter(str(tmp_path), tensorboard=False) as w,
        pytest.raises(ValueError, match="scalars"),
    ):
        w.write_metrics(1, {"x": np.ones(3)})


def test_progress_bar_shows_live_reward():
    bar = progress_bar(10, initial=2, file=open(os.devnull, "w"))
    update_bar(bar, {"reward/mean": jnp.float32(0.125), "loss": 2.0, "other": 1})
    assert bar.n == 3
    assert bar.postfix == "reward/mean=0.125, loss=2"
    bar.close()
