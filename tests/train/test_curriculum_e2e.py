"""The curriculum buffer in the Trainer (tiny_debug): replayed prompts come from the buffer,
its state travels in the checkpoint, and 2 steps + resume 1 step equal 3 straight steps
(prompts drawn and metrics); configs that cannot work are refused before anything loads."""

import json
import os
import zlib

import numpy as np
import pytest

from jaxrl_reason.train.config import ConfigError, load_config, validate
from jaxrl_reason.train.loop import Trainer

CONFIG = os.path.join(
    os.path.dirname(__file__), "..", "..", "experiments", "configs", "tiny_debug.py"
)
ON = [
    "--config.curriculum.enabled=True",
    "--config.curriculum.replay_fraction=0.5",
    "--config.rollout.batch_prompts=4",
    "--config.rollout.n_samples=2",
    "--config.rollout.temperature=1.5",
    "--config.eval_every=0",
    "--config.export=False",
    "--config.loss.kl_coef=0.1",
]
TIMING = ("time/", "throughput/")


def _fake_verifier(responses, examples):
    """Deterministic pseudo-correctness from the text: groups of 2 mix 0/2, 1/2 and 2/2."""
    return np.asarray([zlib.crc32(r.encode()) % 2 for r in responses], np.float32)


def _trainer(workdir, monkeypatch, resume=False):
    cfg = load_config(CONFIG, [*ON, "--config.total_steps=3"])
    tr = Trainer(cfg, str(workdir), resume=resume)
    monkeypatch.setattr(tr.scorer.task, "verify_batch", _fake_verifier)
    return tr


def _step(tr):
    m = tr.train_step()
    m = {k: v for k, v in m.items() if not k.startswith(TIMING)}
    return m, tr.last_prompt_indices.tolist(), tr.curriculum.state_dict()


def _entries(state):
    """index -> (pass rate, visits) of a buffer state."""
    rows = zip(state["index"], state["pass_rate"], state["visits"], strict=True)
    return {i: (p, v) for i, p, v in rows}


def test_replay_is_by_pass_rate_and_resume_is_exact(tmp_path, monkeypatch):
    tr = _trainer(tmp_path / "full", monkeypatch)
    try:
        full = []
        for _ in range(3):
            old = _entries(tr.curriculum.state_dict())
            m, idx, state = _step(tr)
            full.append((m, idx, state))
            k = int(m["curriculum/replayed"])
            # replayed prompts are the batch's last k, drawn from the buffer as it stood
            assert set(idx[len(idx) - k :]) <= set(old) and len(set(idx)) == 4
            # each group's pass rate entered the moving average (ema 0.5); all-equal groups
            # and prompts at max_visits = 4 left
            gid = np.asarray(tr.last_trajectories.group_id)
            new = _entries(state)
            for g, i in enumerate(idx):
                rate = float(np.mean(tr.last_scored.correct[gid == g]))
                p, v = old.get(i, (None, 0))
                want = rate if p is None else 0.5 * p + 0.5 * rate
                if 0 < want < 1 and v + 1 < 4:
                    assert new[i] == (want, v + 1)
                else:
                    assert i not in new
            assert m["curriculum/buffer_size"] == len(new)
            pri = [p * (1 - p) for p in state["pass_rate"]]
            assert m["curriculum/mean_priority"] == pytest.approx(np.mean(pri) if pri else 0.0)
        # nothing seen before step 1; steps 2 and 3 replay floor(0.5 * 4) = 2 prompts
        assert [f[0]["curriculum/replayed"] for f in full] == [0, 2, 2]
        fresh = 12 - sum(int(f[0]["curriculum/replayed"]) for f in full)
        assert tr.data.state()["offset"] == fresh
    finally:
        tr.ckpt.close()

    part = tmp_path / "part"
    tr = _trainer(part, monkeypatch)
    try:
        head = [_step(tr), _step(tr)]
        tr.ckpt.save(tr.step, tr.state, tr.checkpoint_metadata())
        tr.ckpt.wait_until_finished()
    finally:
        tr.ckpt.close()
    tr = _trainer(part, monkeypatch, resume=True)
    try:
        assert tr.step == 2 and tr.curriculum.state_dict() == head[1][2]
        tail = _step(tr)
    finally:
        tr.ckpt.close()
    assert [*head, tail] == full


def test_metadata_is_json_and_off_by_default(tmp_path):
    cfg = load_config(CONFIG)
    assert cfg.curriculum.enabled is False
    from jaxrl_reason.train.loop import _build_curriculum

    assert _build_curriculum(cfg) is None
    on = load_config(CONFIG, ON)
    buf = _build_curriculum(on)
    assert (buf.capacity, buf.ema, buf.max_visits) == (512, 0.5, 4)
    buf.observe(3, 0.5)
    assert json.loads(json.dumps(buf.state_dict()))["index"] == [3]


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--config.curriculum.replay_fraction=1.0"], r"curriculum.replay_fraction=1.0: must be"),
        (["--config.curriculum.replay_fraction=0.2"], r"replays floor\(0.2 \* 4\) = 0 prompts"),
        (["--config.curriculum.capacity=0"], r"curriculum.capacity=0: must be an int >= 1"),
        (["--config.curriculum.ema=0.0"], r"curriculum.ema=0.0: must be in \(0, 1\]"),
        (["--config.curriculum.max_visits=0"], r"curriculum.max_visits=0: must be"),
        (["--config.reward.weights.correct=0.0"], r"with reward.weights.correct=0"),
    ],
)
def test_validation_names_the_field_and_the_fix(extra, match):
    with pytest.raises(ConfigError, match=match):
        load_config(CONFIG, [*ON, *extra])
    # switched off, the same values are not checked (the block is inert)
    cfg = load_config(CONFIG, [*ON, *extra, "--config.curriculum.enabled=False"])
    validate(cfg, num_devices=1)


def test_arith_chain_grpo_takes_the_option():
    path = os.path.join(os.path.dirname(CONFIG), "smollm2_arith_chain_grpo.py")
    cfg = load_config(path, ["--config.curriculum.enabled=True"])
    validate(cfg, num_devices=1)
    assert load_config(path).curriculum.enabled is False


def test_dynamic_sampling_rounds_all_update_the_buffer(tmp_path, monkeypatch):
    """Under DAPO dynamic sampling every round's groups are observed, dropped ones included:
    with 2 samples per prompt a group is informative iff its pass rate is 1/2, so after the
    first step the buffer holds exactly the informative groups of all rounds."""
    extra = ["--config.rollout.dynamic_sampling=True", "--config.rollout.max_resample_rounds=2"]
    cfg = load_config(CONFIG, [*ON, *extra, "--config.total_steps=1"])
    tr = Trainer(cfg, str(tmp_path), resume=False)
    monkeypatch.setattr(tr.scorer.task, "verify_batch", _fake_verifier)
    try:
        m = tr.train_step()
    finally:
        tr.ckpt.close()
    state = tr.curriculum.state_dict()
    assert m["batch/groups_dropped"] > 0  # some all-equal groups were seen (and not kept)
    assert m["curriculum/buffer_size"] == m["batch/prompts_sampled"] - m["batch/groups_dropped"]
    assert state["pass_rate"] == [0.5] * len(state["index"]) and set(state["visits"]) == {1}
    assert tr.data.state()["offset"] == m["batch/prompts_sampled"]
