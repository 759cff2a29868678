"""Resume is exact: 2 steps + resume to 4 equals 4 uninterrupted steps (metrics and params)."""

import json
import os

import jax
import numpy as np
import pytest

from jaxrl_reason.train.config import load_config
from jaxrl_reason.train.loop import run_experiment

CONFIG = os.path.join(
    os.path.dirname(__file__), "..", "..", "experiments", "configs", "tiny_debug.py"
)
# Wall-clock measurements differ between any two runs; everything else must be identical.
TIMING_PREFIXES = ("time/", "throughput/")


# What carries the gradient in these runs: a dense reward the tiny random model earns
# (self-certainty: every row differs, so the policy-gradient loss is non-zero), the KL term to
# the reference policy, the exploration bonus (its answer history is checkpointed) and an
# entropy bonus.
DENSE = [
    "--config.reward.weights.self_certainty=1.0",
    "--config.reward.weights.explore=0.2",
    "--config.loss.kl_coef=0.1",
    "--config.loss.entropy_coef=0.01",
]


def _run(workdir, total_steps, resume=False, extra=()):
    overrides = [
        f"--config.total_steps={total_steps}",
        "--config.eval_every=2",
        *DENSE,
        *extra,
    ]
    cfg = load_config(CONFIG, overrides)
    return run_experiment(cfg, str(workdir), resume=resume)


def _metrics(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    return [{k: v for k, v in r.items() if not k.startswith(TIMING_PREFIXES)} for r in rows]


def _params(workdir):
    import orbax.checkpoint as ocp

    mgr = ocp.CheckpointManager(os.path.join(workdir, "checkpoints"))
    try:
        step = mgr.latest_step()
        args = ocp.args.Composite(state=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore())
        out = mgr.restore(step, args=args)
        return step, out["state"], out["meta"]
    finally:
        mgr.close()


def test_resume_is_exact(tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    _run(full, 4)
    _run(part, 2)
    assert [r["step"] for r in _metrics(part)] == [1, 2]
    _run(part, 4, resume=True)
    m_full, m_part = _metrics(full), _metrics(part)
    assert [r["step"] for r in m_part] == [1, 2, 3, 4]
    assert m_full == m_part
    assert all(r["grad_norm"] > 0 for r in m_full)
    # The losses that carry the gradient are non-zero, so equality means something: the KL
    # to the (initial) reference after resume included (a resumed run once took its restored
    # weights as the reference, and its KL dropped to 0 at step 3).
    for r in m_full[1:]:
        assert r["actor/pg_loss"] != 0.0 and r["actor/kl"] > 0.0
    assert m_part[2]["actor/kl"] == m_full[2]["actor/kl"] > 0.0
    s_full, p_full, meta_full = _params(full)
    s_part, p_part, meta_part = _params(part)
    assert s_full == s_part == 4
    # Data-iterator position and every other resumable count; the training wall-clock
    # (train.time_budget_s) is a measurement, so it differs between any two runs.
    wall = "train_wall_total_s"
    assert meta_full.pop(wall) > 0 and meta_part.pop(wall) > 0
    assert meta_full == meta_part
    leaves_full = jax.tree.leaves(p_full)
    leaves_part = jax.tree.leaves(p_part)
    assert len(leaves_full) == len(leaves_part) > 0
    for a, b in zip(leaves_full, leaves_part, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


# PRIME with its online PRM: a second model and optimiser state in the train state.
ONLINE_PRM = [
    "--config.algo.estimator=prime",
    "--config.implicit_prm.online=True",
    "--config.implicit_prm.lr=1e-2",
]


@pytest.mark.slow  # three runs with two models: ~50 s of CPU
def test_resume_is_exact_with_the_online_prm(tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    _run(full, 4, extra=ONLINE_PRM)
    _run(part, 2, extra=ONLINE_PRM)
    _run(part, 4, resume=True, extra=ONLINE_PRM)
    m_full, m_part = _metrics(full), _metrics(part)
    assert [r["step"] for r in m_part] == [1, 2, 3, 4]
    assert m_full == m_part
    # The PRM trains (its loss moves, its gradient is non-zero) and scores: its metrics after
    # the resume are equal because its parameters and Adam state were restored, not re-made.
    assert all(r["prm/grad_norm"] > 0 and r["prm/nonfinite"] == 0.0 for r in m_full)
    assert len({r["prm/loss"] for r in m_full}) == 4
    assert m_full[2]["prm/reward_mean"] != 0.0
    _, s_full, _ = _params(full)
    _, s_part, _ = _params(part)
    assert set(s_full) == {"params", "value_head", "opt_state", "prm"}
    assert set(s_full["prm"]) == {"params", "opt_state"}
    for sub in ("params", "opt_state"):
        a, b = jax.tree.leaves(s_full["prm"][sub]), jax.tree.leaves(s_part["prm"][sub])
        assert len(a) == len(b) > 0
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    for x, y in zip(jax.tree.leaves(s_full), jax.tree.leaves(s_part), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    # The PRM is its own model: trained on other targets than the policy, it has moved apart.
    gap = [
        float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
        for x, y in zip(
            jax.tree.leaves(s_full["prm"]["params"]), jax.tree.leaves(s_full["params"]), strict=True
        )
    ]
    assert max(gap) > 1e-4
    # Evaluation restores the policy of a PRM run: abstract_state includes the PRM's subtree.
    from flax import nnx

    from jaxrl_reason.models.build import build_model
    from jaxrl_reason.train.state import restore_policy

    cfg = load_config(CONFIG, [*DENSE, *ONLINE_PRM])
    model, _ = build_model(cfg.model)
    policy = restore_policy(cfg, model, os.path.join(part, "checkpoints"), 4)
    _, got, _ = nnx.split(policy, nnx.Param, ...)
    for x, y in zip(jax.tree.leaves(got), jax.tree.leaves(s_full["params"]), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
