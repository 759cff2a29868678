"""DAPO dynamic sampling: the filter on hand-made groups, the trainer never trains on an
all-equal group (tiny_debug), and a resumed run draws exactly the extra prompts the
uninterrupted one drew."""

import json
import os
import zlib

import numpy as np
import pytest

from jaxrl_reason.train import phases
from jaxrl_reason.train.config import ConfigError, load_config, validate
from jaxrl_reason.train.loop import Trainer

CONFIG = os.path.join(
    os.path.dirname(__file__), "..", "..", "experiments", "configs", "tiny_debug.py"
)


def test_informative_groups_worked_example():
    """prm_search_selftraining.md §6: G = 4, accs [1111] [0100] [0000] [1011]."""
    acc = np.array([1, 1, 1, 1, 0, 1, 0, 0, 0, 0, 0, 0, 1, 0, 1, 1], np.float32)
    gid = np.repeat(np.arange(4), 4)
    assert phases.informative_groups(acc, gid, 4).tolist() == [False, True, False, True]
    # one sample per group: always kept (DAPO: "or G == 1")
    assert phases.informative_groups(np.ones(3), np.arange(3), 3).tolist() == [True] * 3


def _fake_verifier(responses, examples):
    """Deterministic pseudo-correctness from the text, so groups mix all-equal and mixed."""
    return np.asarray([zlib.crc32(r.encode()) % 2 for r in responses], np.float32)


OVERRIDES = [
    "--config.rollout.dynamic_sampling=True",
    "--config.rollout.max_resample_rounds=2",
    "--config.rollout.batch_prompts=2",
    "--config.rollout.n_samples=2",
    "--config.rollout.temperature=1.5",
    "--config.eval_every=0",
    "--config.loss.kl_coef=0.1",
]


def _trainer(workdir, total_steps, resume=False, monkeypatch=None):
    cfg = load_config(CONFIG, [*OVERRIDES, f"--config.total_steps={total_steps}"])
    tr = Trainer(cfg, str(workdir), resume=resume)
    monkeypatch.setattr(tr.scorer.task, "verify_batch", _fake_verifier)
    return tr


@pytest.mark.slow  # ~100 s on one shared core: 6 tiny_debug steps with extra rounds
def test_never_trains_on_an_all_equal_group_and_resumes_exactly(tmp_path, monkeypatch):
    full = tmp_path / "full"
    tr = _trainer(full, 3, monkeypatch=monkeypatch)
    ms = []
    try:
        for _ in range(3):
            m = tr.train_step()
            ms.append(m)
            traj, sc = tr.last_trajectories, tr.last_scored
            gid, mask = np.asarray(traj.group_id), np.asarray(traj.loss_mask)
            assert traj.batch_size == 4 and sorted(set(gid.tolist())) == [0, 1]
            for g in (0, 1):
                rows = gid == g
                if mask[rows].sum() > 0:  # trained on: its accuracies differ
                    assert np.std(sc.correct[rows]) > 0
            masked = sum(mask[gid == g].sum() == 0 for g in (0, 1))
            assert m["batch/groups_masked"] == masked
            assert m["batch/prompts_sampled"] == 2 * (1 + m["batch/resample_rounds"])
            assert m["batch/resample_rounds"] <= 2
            # Every round's tokens count against the budget: more than one round can decode
            # (2 prompts x 2 samples x at most 8 tokens) when extra rounds were drawn.
            assert m["rollout/decoded_tokens"] <= m["batch/prompts_sampled"] * 2 * 8
            if m["batch/resample_rounds"] > 0:
                assert m["rollout/decoded_tokens"] > 2 * 2 * 8
        drawn = sum(m["batch/prompts_sampled"] for m in ms)
        assert tr.data.state()["offset"] == drawn
        assert any(m["batch/groups_dropped"] > 0 for m in ms)  # the filter did something
        assert any(m["batch/resample_rounds"] > 0 for m in ms)
    finally:
        tr.ckpt.close()

    # resume: 1 step, checkpoint, then 2 more steps from the checkpoint
    part = tmp_path / "part"
    tr = _trainer(part, 3, monkeypatch=monkeypatch)
    try:
        first = tr.train_step()
        tr.ckpt.save(tr.step, tr.state, tr.checkpoint_metadata())
        tr.ckpt.wait_until_finished()
    finally:
        tr.ckpt.close()
    tr = _trainer(part, 3, resume=True, monkeypatch=monkeypatch)
    try:
        assert tr.step == 1 and tr.data.state()["offset"] == ms[0]["batch/prompts_sampled"]
        rest = [tr.train_step(), tr.train_step()]
    finally:
        tr.ckpt.close()
    timing = ("time/", "throughput/")
    strip = lambda m: {k: v for k, v in m.items() if not k.startswith(timing)}
    assert [strip(m) for m in [first, *rest]] == [strip(m) for m in ms]


def test_validation_rejects_tree_rollouts_and_bad_metric():
    cfg = load_config(CONFIG, ["--config.rollout.dynamic_sampling=True"])
    validate(cfg, num_devices=1)
    with pytest.raises(ConfigError, match="rollout.dynamic_sampling=True needs rollout.strategy"):
        bad = load_config(
            CONFIG, ["--config.rollout.dynamic_sampling=True", "--config.rollout.strategy=tree"]
        )
        validate(bad, num_devices=1)
    with pytest.raises(ConfigError, match="rollout.dynamic_metric"):
        bad = load_config(
            CONFIG,
            ["--config.rollout.dynamic_sampling=True", "--config.rollout.dynamic_metric=std"],
        )
        validate(bad, num_devices=1)


def test_validation_rejects_prof_with_dynamic_sampling():
    with pytest.raises(ConfigError, match=r"dynamic_sampling=True with prof.n_remove=1"):
        bad = load_config(
            CONFIG, ["--config.rollout.dynamic_sampling=True", "--config.prof.n_remove=1"]
        )
        validate(bad, num_devices=1)


def test_dapo_config_loads_and_validates():
    cfg = load_config("experiments/configs/smollm2_arith_chain_dapo.py")
    validate(cfg, num_devices=1)
    assert cfg.rollout.dynamic_sampling and cfg.rollout.max_resample_rounds == 9
    assert json.dumps(cfg.rollout.to_dict())  # serialisable for config.json
