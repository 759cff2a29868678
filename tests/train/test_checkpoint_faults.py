"""Checkpoint faults: a corrupt newest step falls back to an older one with a one-line
warning; a tree mismatch is explained in one line; ``max_checkpoints`` must be >= 1."""

import glob
import logging
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_reason.train.checkpoint import (
    MISMATCH_HINT_FIELDS,
    Checkpointer,
    CheckpointMismatchError,
    CheckpointRestoreError,
    describe_tree_mismatch,
)


def _state(v=1.0, *, value_head=True, layers=2):
    params = {"layers": [{"w": jnp.full((8, 4), v)} for _ in range(layers)], "emb": jnp.ones(3)}
    state = {"params": params, "step": jnp.asarray(int(v), jnp.int32), "rng": jax.random.key(0)}
    if value_head:
        state["value_head"] = {"w": jnp.full((4,), v)}
    return state


def _abstract(tree):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree)


def _two_steps(directory):
    with Checkpointer(directory, save_every=1, handle_signals=False) as ck:
        ck.save(1, _state(1.0), {"step": 1})
        ck.save(2, _state(2.0), {"step": 2})
    return os.path.join(directory, "2")


def _truncate_array_files(step_dir):
    files = [f for f in glob.glob(os.path.join(step_dir, "state", "**", "d", "*"), recursive=True)]
    assert files
    for f in files:
        with open(f, "r+b") as fh:
            fh.truncate(os.path.getsize(f) // 2)


def _delete_tree_metadata(step_dir):
    os.remove(os.path.join(step_dir, "state", "_METADATA"))


def _delete_checkpoint_metadata(step_dir):
    os.remove(os.path.join(step_dir, "_CHECKPOINT_METADATA"))


@pytest.mark.parametrize(
    "corrupt", [_truncate_array_files, _delete_tree_metadata, _delete_checkpoint_metadata]
)
def test_corrupt_newest_step_falls_back_to_the_previous_one(tmp_path, caplog, corrupt):
    corrupt(_two_steps(str(tmp_path)))
    with caplog.at_level(logging.WARNING, logger="jaxrl_reason.train.checkpoint"):
        with Checkpointer(tmp_path, save_every=1, handle_signals=False) as ck:
            r = ck.restore_latest(_abstract(_state()))
            skipped = ck.skipped_steps
    assert r.step == 1 and r.metadata == {"step": 1}
    np.testing.assert_array_equal(r.state["value_head"]["w"], np.full(4, 1.0, np.float32))
    assert [s for s, _ in skipped] == [2]
    warnings = [rec.getMessage() for rec in caplog.records if rec.levelno >= logging.WARNING]
    mine = [w for w in warnings if "checkpoint step 2" in w]
    assert len(mine) == 1 and "\n" not in mine[0] and len(mine[0]) < 500, mine
    assert "skipped" in mine[0] and "trying step 1" in mine[0]


def test_every_step_corrupt_raises_one_clear_error(tmp_path):
    _two_steps(str(tmp_path))
    for step in ("1", "2"):
        _delete_tree_metadata(os.path.join(tmp_path, step))
    with Checkpointer(tmp_path, save_every=1, handle_signals=False) as ck:
        with pytest.raises(CheckpointRestoreError, match="step 2: .*step 1: ") as e:
            ck.restore_latest(_abstract(_state()))
    assert "\n" not in str(e.value) and "_METADATA" in str(e.value)


def test_value_head_in_checkpoint_but_not_target_is_one_clear_line(tmp_path):
    _two_steps(str(tmp_path))
    with Checkpointer(tmp_path, save_every=1, handle_signals=False) as ck:
        with pytest.raises(CheckpointMismatchError) as e:
            ck.restore_latest(_abstract(_state(value_head=False)))
        assert ck.skipped_steps == []  # a mismatch is not a corruption: no fallback
    msg = str(e.value)
    assert "\n" not in msg and len(msg) < 600, msg
    assert "in the checkpoint but not the target: value_head" in msg
    assert "value_head.w" not in msg  # the subtree is named, not each of its leaves
    for field in MISMATCH_HINT_FIELDS:
        assert field in msg
    assert e.value.step == 2 and e.value.only_in_checkpoint == ["value_head"]
    assert isinstance(e.value, ValueError)


def test_changed_trainable_layers_and_shapes_are_listed(tmp_path):
    with Checkpointer(tmp_path, save_every=1, handle_signals=False) as ck:
        ck.save(1, _state(layers=2))
        with pytest.raises(CheckpointMismatchError, match="target but not the checkpoint: ") as e:
            ck.restore_latest(_abstract(_state(layers=3)))
        assert e.value.only_in_target == ["params.layers.2"]
        bigger = _state()
        bigger["params"]["emb"] = jnp.ones(5)
        with pytest.raises(CheckpointMismatchError, match=r"params.emb \(3,\) vs \(5,\)"):
            ck.restore_latest(_abstract(bigger))


def test_describe_tree_mismatch_names_the_first_few():
    saved = {f"params.layers.{i}.w": (2,) for i in range(6)}
    err = describe_tree_mismatch(saved, {"params.layers.0.w": (2,)}, step=7)
    assert "params.layers.1, params.layers.2, params.layers.3 (+2 more)" in str(err)
    assert describe_tree_mismatch(saved, dict(saved), step=7) is None


@pytest.mark.parametrize("bad", [0, -1])
def test_max_to_keep_must_be_positive(tmp_path, bad):
    with pytest.raises(ValueError, match="max_checkpoints"):
        Checkpointer(tmp_path, save_every=1, max_to_keep=bad, handle_signals=False)
    Checkpointer(tmp_path, save_every=1, max_to_keep=None, handle_signals=False).close()
