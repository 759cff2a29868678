"""A checkpointable batch iterator over a task: seeded shuffling, epochs, exact resume.

The stream is the concatenation of per-epoch permutations of ``range(N)`` (epoch ``e`` uses
``np.random.default_rng([seed, e])``), cut into consecutive batches; a batch may straddle two
epochs, so every batch is full and every example is seen once per epoch (the semantics of
``tf.data``'s ``shuffle(reshuffle_each_iteration) -> repeat -> batch``). The position is two
integers, so the state is a small dict of ints that goes into the checkpoint; a restored
iterator yields exactly the batches the uninterrupted one would have.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["DataIterator"]


class DataIterator:
    """Batches of examples (or indices) from a sequence, with a resumable position.

    Args:
      source: a :class:`~jaxrl_reason.data.base.Task` (or any sequence); an ``int`` N iterates
        over indices ``0..N-1``.
      batch_size: examples per batch (> 0).
      seed: shuffling seed.
      shuffle: False keeps the source order in every epoch.
      num_epochs: stop after this many epochs (the last batch may be short); None = forever.

    ``next(it)`` returns a list of examples; :meth:`next_indices` returns ``int64[batch]``.
    """

    def __init__(
        self,
        source: Sequence[Any] | int,
        batch_size: int,
        *,
        seed: int = 0,
        shuffle: bool = True,
        num_epochs: int | None = None,
    ):
        n = source if isinstance(source, int) else len(source)
        if n <= 0:
            raise ValueError(f"DataIterator: the source is empty (num_examples={n})")
        if batch_size <= 0:
            raise ValueError(f"DataIterator: batch_size={batch_size} must be > 0")
        if num_epochs is not None and num_epochs <= 0:
            raise ValueError(f"DataIterator: num_epochs={num_epochs} must be > 0 or None")
        self.source = None if isinstance(source, int) else source
        self.num_examples = int(n)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.shuffle = bool(shuffle)
        self.num_epochs = num_epochs
        self._epoch = 0
        self._offset = 0
        self._perm_epoch = -1
        self._perm: np.ndarray | None = None

    def _order(self, epoch: int) -> np.ndarray:
        if self._perm_epoch != epoch:
            if self.shuffle:
                self._perm = np.random.default_rng([self.seed, epoch]).permutation(
                    self.num_examples
                )
            else:
                self._perm = np.arange(self.num_examples)
            self._perm_epoch = epoch
        assert self._perm is not None
        return self._perm

    @property
    def epoch(self) -> int:
        """The epoch the next batch starts in."""
        return self._epoch

    def next_indices(self, count: int | None = None) -> np.ndarray:
        """The next batch as ``int64[batch_size]`` indices into the source.

        Args:
          count: take this many indices instead of ``batch_size`` (>= 0); the stream is the
            same, only cut differently, so ``next_indices(3)`` then ``next_indices(1)`` give
            the 4 indices one ``batch_size=4`` call would (the replay buffer of
            :mod:`jaxrl_reason.data.curriculum` draws only the fresh part of a batch).

        Raises:
          StopIteration: after ``num_epochs`` epochs.
        """
        want = self.batch_size if count is None else int(count)
        if want < 0:
            raise ValueError(f"DataIterator.next_indices: count={count} must be >= 0")
        if want == 0:
            return np.zeros((0,), np.int64)
        out = []
        need = want
        while need > 0:
            if self.num_epochs is not None and self._epoch >= self.num_epochs:
                break
            order = self._order(self._epoch)
            take = order[self._offset : self._offset + need]
            out.append(take)
            need -= len(take)
            self._offset += len(take)
            if self._offset == self.num_examples:
                self._epoch += 1
                self._offset = 0
        if need == want:
            raise StopIteration
        return np.concatenate(out).astype(np.int64)

    def __iter__(self):
        return self

    def __next__(self) -> list[Any]:
        idx = self.next_indices()
        if self.source is None:
            return idx.tolist()
        return [self.source[int(i)] for i in idx]

    def state(self) -> dict[str, int]:
        """The position as a dict of ints (``epoch``, ``offset``, plus checks for restore)."""
        return {
            "epoch": self._epoch,
            "offset": self._offset,
            "seed": self.seed,
            "num_examples": self.num_examples,
            "batch_size": self.batch_size,
            "shuffle": int(self.shuffle),
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Continues from a :meth:`state` (values may be numpy / jax scalars from a checkpoint).

        Raises:
          ValueError: the state was saved for a different dataset size, batch size, seed or
            shuffle setting (resuming would silently change the data order), or is malformed.
        """
        try:
            st = {k: int(np.asarray(v)) for k, v in state.items()}
            epoch, offset = st["epoch"], st["offset"]
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"DataIterator.restore: malformed state {state!r} ({e})") from e
        mine = self.state()
        for k in ("seed", "num_examples", "batch_size", "shuffle"):
            if k in st and st[k] != mine[k]:
                raise ValueError(
                    f"DataIterator.restore: checkpoint has {k}={st[k]} but this iterator has "
                    f"{k}={mine[k]}; resume with the same data config"
                )
        if epoch < 0 or not 0 <= offset < self.num_examples:
            raise ValueError(f"DataIterator.restore: bad position epoch={epoch} offset={offset}")
        self._epoch, self._offset = epoch, offset
