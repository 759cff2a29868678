"""PURE fed by a PRM checkpoint, PROF's filter and CAPO's generative judge: one RL step each
on tiny_debug; config errors for a missing PRM before anything loads."""

from __future__ import annotations

import os

import numpy as np
import pytest

from jaxrl_reason.train.config import ConfigError, load_config
from tests.train.test_estimators_e2e import CONFIGS, TINY

PURE = os.path.join(CONFIGS, "smollm2_arith_chain_pure.py")
CAPO = os.path.join(CONFIGS, "smollm2_arith_chain_capo.py")


@pytest.fixture(scope="module")
def prm_path(tmp_path_factory):
    """A tiny_debug PRM checkpoint with a random (non-zero) head."""
    import jax
    import ml_collections

    from jaxrl_reason.models.build import build_model
    from jaxrl_reason.models.prm import PRMHead, save_prm

    mcfg = ml_collections.ConfigDict({"name": "tiny_debug", "dtype": "float32"})
    model, _ = build_model(mcfg)
    head = PRMHead(model.config.hidden_size)
    head.kernel.value = jax.random.normal(jax.random.key(0), head.kernel.value.shape)
    path = str(tmp_path_factory.mktemp("prm") / "prm")
    return save_prm(path, model, head, {"model": mcfg.to_dict()}, with_decoder=False)


@pytest.mark.slow  # ~25 s on the shared CPU (two models compile)
def test_pure_with_prm_scorer_and_prof_runs_a_step(prm_path, tmp_path):
    from jaxrl_reason.models.prm import load_prm
    from jaxrl_reason.train.loop import Trainer

    cfg = load_config(
        PURE,
        TINY
        + [
            "--config.reward.step_scorer=prm",
            f"--config.prm.path={prm_path}",
            "--config.prof.n_remove=1",
        ],
    )
    trainer = Trainer(cfg, str(tmp_path))
    try:
        m = trainer.train_step()
        traj = trainer.last_trajectories
    finally:
        trainer.ckpt.close()
    assert np.isfinite(m["loss"]) and np.isfinite(m["grad_norm"])
    prm = load_prm(prm_path)
    want = prm.scores(traj.prompt_tokens, traj.prompt_mask, traj.tokens, traj.segment_id, 8)
    np.testing.assert_allclose(traj.step_scores, want, atol=1e-6)
    assert np.all((want[:, 0] > 0) & (want[:, 0] < 1))  # every row has a step 0
    # PROF drops one of the two responses of each of the two prompts: zero loss mask, zero
    # advantages on those rows.
    assert m["batch/prof_dropped"] == 2.0
    dropped = np.asarray(traj.loss_mask).sum(-1) == 0
    assert dropped.sum() == 2 and np.all(np.asarray(traj.advantages)[dropped] == 0)
    assert sorted(np.asarray(traj.group_id)[dropped]) == [0, 1]
    assert "reward/prm" in m


@pytest.mark.slow  # ~30 s on the shared CPU (the judge's sampler compiles too)
def test_capo_with_the_policy_as_judge_runs_a_step(tmp_path):
    from jaxrl_reason.train.loop import Trainer

    cfg = load_config(
        CAPO,
        TINY
        + [
            "--config.reward.step_scorer=judge",
            "--config.judge.num_judgements=2",
            "--config.judge.max_new_tokens=8",
        ],
    )
    trainer = Trainer(cfg, str(tmp_path))
    try:
        m = trainer.train_step()
        traj = trainer.last_trajectories
    finally:
        trainer.ckpt.close()
    assert np.isfinite(m["loss"])
    v = np.asarray(traj.step_verdicts)
    assert v.shape == (4, 2, 8) and v.dtype == bool
    # The random policy's judgements are garbage: every step abstains, nothing is flagged.
    assert not v.any() and m["reward/judge"] == 1.0


@pytest.mark.parametrize(
    "extra, msg",
    [
        ([], "prm.path is empty but the 'prm' step scorer is on"),
        (["--config.prm.path=/nonexistent/prm"], "prm.path='/nonexistent/prm': not a PRM"),
    ],
)
def test_prm_scorer_without_checkpoint_is_a_config_error(extra, msg):
    with pytest.raises(ConfigError, match=msg.replace("(", r"\(").replace(")", r"\)")):
        load_config(PURE, TINY + ["--config.reward.step_scorer=prm", *extra])


def test_prof_needs_step_scores():
    grpo = os.path.join(CONFIGS, "smollm2_arith_chain_grpo.py")
    with pytest.raises(ConfigError, match="prof.n_remove=1 needs step scores"):
        load_config(grpo, TINY + ["--config.prof.n_remove=1"])
    with pytest.raises(ConfigError, match="prof.n_remove=2 must be < rollout.n_samples=2"):
        load_config(PURE, TINY + ["--config.prof.n_remove=2"])
