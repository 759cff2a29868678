"""DataIterator: epochs are permutations, and a restored iterator continues exactly."""

import numpy as np
import pytest

from jaxrl_reason.data import ArithmeticTask, DataIterator


def test_each_epoch_is_a_permutation_and_batches_are_full():
    it = DataIterator(10, batch_size=4, seed=0)
    stream = np.concatenate([it.next_indices() for _ in range(5)])  # 20 = two epochs
    assert sorted(stream[:10]) == list(range(10)) and sorted(stream[10:]) == list(range(10))
    assert list(stream[:10]) != list(stream[10:])  # reshuffled per epoch
    assert it.state()["epoch"] == 2 and it.state()["offset"] == 0


def test_exact_resume():
    task = ArithmeticTask("train", num_examples=37)
    ref = DataIterator(task, batch_size=8, seed=5)
    ref_batches = [[e.id for e in next(ref)] for _ in range(12)]

    it = DataIterator(task, batch_size=8, seed=5)
    for _ in range(5):
        next(it)
    saved = it.state()
    assert all(isinstance(v, int) for v in saved.values())
    resumed = DataIterator(task, batch_size=8, seed=5)
    resumed.restore({k: np.int32(v) for k, v in saved.items()})  # as read from a checkpoint
    got = [[e.id for e in next(resumed)] for _ in range(7)]
    assert got == ref_batches[5:]


def test_no_shuffle_and_num_epochs():
    it = DataIterator(5, batch_size=2, shuffle=False, num_epochs=1)
    assert [list(b) for b in it] == [[0, 1], [2, 3], [4]]


def test_restore_rejects_a_different_config():
    it = DataIterator(10, batch_size=4, seed=0)
    with pytest.raises(ValueError, match="batch_size=2"):
        DataIterator(10, batch_size=2, seed=0).restore(it.state())
    with pytest.raises(ValueError, match="malformed"):
        it.restore({"epoch": 0})
    with pytest.raises(ValueError, match="batch_size=0"):
        DataIterator(10, batch_size=0)
