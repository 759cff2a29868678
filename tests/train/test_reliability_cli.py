"""Faults through the command line (``python -m experiments.train``), as a user meets them.

SIGTERM / SIGINT mid-run stop cleanly with a checkpoint and resume to the uninterrupted run;
a workdir that holds a run is never overwritten by accident; bad settings are rejected in
seconds without loading a model; a corrupt newest checkpoint falls back to the one before;
a non-finite update never reaches the weights.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CONFIG = os.path.join(ROOT, "experiments", "configs", "tiny_debug.py")
TIMING = ("time/", "throughput/")
# A dense reward the random model earns, so the weights really move between steps.
RUN = [
    "--config.eval_every=0",
    "--config.export=False",
    "--config.checkpoint_every=0",
    "--config.reward.weights.self_certainty=1.0",
]


def _cli(workdir, *args, wait=True):
    cmd = [sys.executable, "-m", "experiments.train", "--config", CONFIG, "--workdir", str(workdir)]
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1")
    p = subprocess.Popen(
        [*cmd, *args], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    if not wait:
        return p
    out, err = p.communicate(timeout=600)
    return p.returncode, out, err


def _metrics(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    return [{k: v for k, v in r.items() if not k.startswith(TIMING)} for r in rows]


def _rows(workdir):
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return 0
    with open(path) as f:
        return sum(1 for _ in f)


def _ckpt_steps(workdir):
    d = os.path.join(workdir, "checkpoints")
    return sorted(int(x) for x in os.listdir(d) if x.isdigit()) if os.path.isdir(d) else []


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The uninterrupted 4-step run every interrupted run is compared with."""
    w = tmp_path_factory.mktemp("straight")
    rc, out, err = _cli(w, "--config.total_steps=4", *RUN)
    assert rc == 0, err[-2000:]
    return _metrics(w)


@pytest.mark.parametrize(
    "sig", [signal.SIGTERM, pytest.param(signal.SIGINT, marks=pytest.mark.slow)]
)
def test_signal_stops_with_a_checkpoint_and_resume_equals_the_straight_run(sig, straight, tmp_path):
    w = tmp_path / "run"
    p = _cli(w, "--config.total_steps=4", *RUN, wait=False)
    deadline = time.time() + 300
    while _rows(w) < 1 and p.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    p.send_signal(sig)
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err[-2000:]
    steps = _ckpt_steps(w)
    stopped_at = _rows(w)
    assert steps == [stopped_at] and 1 <= stopped_at < 4, (steps, stopped_at, out)
    assert "--resume" in out and f"after step {stopped_at}" in out
    rc, out, err = _cli(w, "--config.total_steps=4", *RUN, "--resume")
    assert rc == 0, err[-2000:]
    assert _metrics(w) == straight
    assert all(r["actor/pg_loss"] != 0.0 for r in straight)


def test_a_workdir_holding_a_run_is_not_overwritten(tmp_path):
    w = tmp_path / "run"
    w.mkdir()
    (w / "metrics.jsonl").write_text('{"step": 1}\n')
    (w / "config.json").write_text("{}")
    before = {p: (w / p).read_bytes() for p in ("metrics.jsonl", "config.json")}
    rc, out, err = _cli(w, "--config.total_steps=1")
    assert rc != 0
    assert "--resume" in err and "--overwrite" in err
    assert sorted(os.listdir(w)) == ["config.json", "metrics.jsonl"]
    assert {p: (w / p).read_bytes() for p in before} == before


@pytest.mark.parametrize(
    "override, field",
    [
        ("--config.optim.learning_rate=nan", "optim.learning_rate"),
        ("--config.optim.learning_rate=-1e-5", "optim.learning_rate"),
        ("--config.optim.b2=1.0", "optim.b2"),
        ("--config.train.ppo_epochs=0", "train.ppo_epochs"),
        ("--config.rollout.temperature=0", "rollout.temperature"),
        ("--config.rollout.top_p=0", "rollout.top_p"),
        ("--config.max_checkpoints=0", "max_checkpoints"),
        ("--config.loss.agg_mode=bogus", "loss.agg_mode"),
        ("--config.task.low=90", "task.low"),
        ("--config.algo.estimator=vineppo", "algo.estimator"),
    ],
)
def test_bad_settings_are_rejected_in_seconds_without_a_model(override, field, tmp_path):
    w = tmp_path / "run"
    t0 = time.perf_counter()
    rc, out, err = _cli(w, override, "--config.task.high=20")
    elapsed = time.perf_counter() - t0
    assert rc == 2 and field in err, err[-1000:]
    assert elapsed < 5.0 + 5.0  # interpreter + JAX import included; no model, no compile
    assert not (w / "checkpoints").exists()


def test_corrupt_newest_checkpoint_falls_back_to_the_previous_one(tmp_path):
    from jaxrl_reason.train.config import load_config
    from jaxrl_reason.train.loop import Trainer, run_experiment

    cfg = load_config(CONFIG, ["--config.total_steps=2", "--config.checkpoint_every=1", *RUN[:2]])
    run_experiment(cfg, str(tmp_path))
    assert _ckpt_steps(tmp_path) == [1, 2]
    # Truncate every array file of the newest step (Orbax's "d" data folders).
    import glob

    files = glob.glob(
        str(tmp_path / "checkpoints" / "2" / "state" / "**" / "d" / "*"), recursive=True
    )
    assert files
    for f in files:
        with open(f, "r+b") as fh:
            fh.truncate(os.path.getsize(f) // 2)
    trainer = Trainer(cfg, str(tmp_path), resume=True)
    try:
        assert trainer.step == 1
        assert [s for s, _ in trainer.ckpt.skipped_steps] == [2]
    finally:
        trainer.ckpt.close()


def test_non_finite_update_never_reaches_the_weights():
    from flax import nnx

    from jaxrl_reason.models import ModelConfig, Transformer
    from jaxrl_reason.train import step as step_lib

    model = Transformer(ModelConfig.tiny_debug(vocab_size=64), rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model, nnx.Param)
    tx = optax.with_extra_args_support(optax.scale(float("nan")))
    opt_state = tx.init((params, None))
    update = jax.jit(step_lib.make_update_fn(graphdef, tx, step_lib.LossConfig(), 1))
    b, p, r = 2, 3, 4
    batch = {
        "prompt_tokens": jnp.ones((b, p), jnp.int32),
        "prompt_mask": jnp.ones((b, p), bool),
        "response": jnp.ones((b, r), jnp.int32),
        "response_mask": jnp.ones((b, r), jnp.float32),
        "old_logprobs": jnp.zeros((b, r)),
        "advantages": jnp.ones((b, r)),
        "returns": jnp.zeros((b, r)),
    }
    new_params, _, _, m = update(params, None, opt_state, batch)
    assert float(m["update/nonfinite"]) == 1.0
    for a, c in zip(jax.tree.leaves(params), jax.tree.leaves(new_params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(c))
