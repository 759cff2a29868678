"""A replay / curriculum prompt buffer: replay the prompts whose pass rate is near 1/2.

Why ``p (1 - p)``. With a group of ``n`` binary rewards of a prompt whose pass rate is ``p``,
GRPO's advantage is ``(r - mean) / std`` within the group: a group that is all right
(``p = 1``) or all wrong (``p = 0``) has zero advantage on every token and no gradient
(DAPO, Yu et al. 2025, arXiv 2503.14476, section 3.2, drops such groups). The reward's
variance ``Var[r] = p (1 - p)`` is the expected spread of the group; "Online Difficulty
Filtering for Reasoning Oriented Reinforcement Learning" (Bae et al. 2025, arXiv
2504.03380) shows that the expected policy-gradient signal of a prompt grows with it and
keeps prompts of intermediate pass rate. So the priority of a prompt is

    priority(p) = p (1 - p)        (0 at p in {0, 1}, maximal 0.25 at p = 0.5)

e.g. ``priority(0.5) = 0.25``, ``priority(0.25) = 0.1875``, ``priority(0) = priority(1) = 0``.

What the buffer keeps. For every prompt seen in training (by its dataset index, so the
state is a few JSON lists of numbers): ``p``, an exponential moving average of the group
pass rates it has had (the first group sets it; then ``p <- (1 - ema) p + ema * rate``), and
``visits``, how many groups of it have been rolled out. After each update:

* a prompt with ``p in {0, 1}`` (exactly: all its groups were all-wrong or all-right) has
  priority 0, can never be drawn, and is dropped;
* a prompt rolled out ``max_visits`` times is retired (bounds how often one prompt is
  trained on);
* past ``capacity`` entries the one with the lowest priority is dropped (the oldest of
  equals).

How a batch is built (:func:`mix_batch`). ``k = floor(replay_fraction * B)`` of the ``B``
prompts are drawn from the buffer without replacement with probability proportional to
their priority (fewer when fewer are drawable), the rest fresh from the data iterator. The
draw uses a ``numpy.random.Generator`` the caller seeds from ``(seed, step)``, and the
buffer's order and numbers are restored exactly from :meth:`PromptBuffer.state_dict`, so a
resumed run draws the prompts an uninterrupted one draws.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

__all__ = ["PromptBuffer", "mix_batch", "priority"]


def priority(p: float | np.ndarray) -> float | np.ndarray:
    """The replay priority ``p (1 - p)`` of a pass rate ``p`` in ``[0, 1]`` (the variance
    of a Bernoulli(``p``) reward; DAPO / Online Difficulty Filtering: zero-variance groups
    carry no GRPO gradient). Scalar in, float out; ``float64[N]`` in, ``float64[N]`` out."""
    if np.ndim(p) == 0:
        return float(p) * (1.0 - float(p))
    p = np.asarray(p, np.float64)
    return p * (1.0 - p)


class PromptBuffer:
    """Per-prompt pass-rate statistics of the prompts seen in training, and a sampler.

    Args:
      capacity: the most prompts kept (>= 1).
      ema: weight of a new group's pass rate in the moving average, in ``(0, 1]`` (1 keeps
        only the last group's rate).
      max_visits: a prompt is retired after this many rolled-out groups (>= 1).

    Entries keep their insertion order (an update does not move one), so the sampler's
    candidate order, and with it every draw, is a function of the observations alone.
    """

    def __init__(self, capacity: int, *, ema: float = 0.5, max_visits: int = 4):
        if capacity < 1:
            raise ValueError(f"PromptBuffer: capacity={capacity} must be >= 1")
        if not 0 < ema <= 1:
            raise ValueError(f"PromptBuffer: ema={ema} must be in (0, 1]")
        if max_visits < 1:
            raise ValueError(f"PromptBuffer: max_visits={max_visits} must be >= 1")
        self.capacity = int(capacity)
        self.ema = float(ema)
        self.max_visits = int(max_visits)
        # index -> [p, visits]; a dict keeps insertion order (the sampler's candidate order).
        self._entries: dict[int, list] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, index: int) -> bool:
        return int(index) in self._entries

    def indices(self) -> np.ndarray:
        """``int64[N]`` dataset indices of the kept prompts, in insertion order."""
        return np.fromiter(self._entries, np.int64, len(self._entries))

    def pass_rate(self, index: int) -> float:
        """The moving-average pass rate of a kept prompt (KeyError if not kept)."""
        return float(self._entries[int(index)][0])

    def visits(self, index: int) -> int:
        """How many groups of a kept prompt were observed (KeyError if not kept)."""
        return int(self._entries[int(index)][1])

    def priorities(self) -> np.ndarray:
        """``float64[N]`` priorities ``p (1 - p)`` of the kept prompts, in insertion order."""
        return priority(np.array([e[0] for e in self._entries.values()], np.float64))

    def mean_priority(self) -> float:
        """Mean priority over the kept prompts (0.0 when empty); at most 0.25."""
        return float(self.priorities().mean()) if self._entries else 0.0

    def observe(self, index: int, pass_rate: float) -> None:
        """Records one rolled-out group of prompt ``index`` whose responses passed the
        verifier at rate ``pass_rate`` in ``[0, 1]``: updates the moving average and the
        visit count, then drops the prompt if its priority is 0 or it reached
        ``max_visits``, then trims the buffer to ``capacity`` (lowest priority first)."""
        index, rate = int(index), float(pass_rate)
        if not (math.isfinite(rate) and 0.0 <= rate <= 1.0):
            raise ValueError(f"PromptBuffer.observe: pass_rate={pass_rate} not in [0, 1]")
        entry = self._entries.get(index)
        if entry is None:
            entry = self._entries[index] = [rate, 1]
        else:
            entry[0] = (1.0 - self.ema) * entry[0] + self.ema * rate
            entry[1] += 1
        if entry[0] <= 0.0 or entry[0] >= 1.0 or entry[1] >= self.max_visits:
            del self._entries[index]
        self._trim()

    def _trim(self) -> None:
        """Drops the lowest-priority entries (the oldest of equals: ``argmin`` takes the
        first) until at most ``capacity`` remain."""
        while len(self._entries) > self.capacity:
            drop = int(self.indices()[int(np.argmin(self.priorities()))])
            del self._entries[drop]

    def observe_groups(
        self, indices: Iterable[int], correct: np.ndarray, group_ids: np.ndarray
    ) -> None:
        """Records a scored batch: ``indices int[G]`` the dataset index of each group,
        ``correct float[B]`` the verifier's outcome per row, ``group_ids int[B]`` each row's
        group in ``[0, G)``. A group's pass rate is the mean of its rows' ``correct``."""
        correct = np.asarray(correct, np.float64)
        group_ids = np.asarray(group_ids)
        for g, index in enumerate(indices):
            rows = correct[group_ids == g]
            if rows.size:
                self.observe(int(index), float(rows.mean()))

    def sample(self, k: int, rng: np.random.Generator, exclude: Iterable[int] = ()) -> np.ndarray:
        """Up to ``k`` distinct kept prompts, drawn without replacement with probability
        proportional to their priority (prompts of priority 0 and those in ``exclude`` are
        never drawn). Returns ``int64[min(k, drawable)]`` dataset indices; deterministic for
        a given ``rng`` state and buffer."""
        skip = {int(i) for i in exclude}
        idx, pri = self.indices(), self.priorities()
        ok = (pri > 0) & np.array([int(i) not in skip for i in idx], bool)
        idx, pri = idx[ok], pri[ok]
        k = min(int(k), len(idx))
        if k <= 0:
            return np.zeros((0,), np.int64)
        pick = rng.choice(len(idx), size=k, replace=False, p=pri / pri.sum())
        return idx[pick].astype(np.int64)

    def num_drawable(self) -> int:
        """How many kept prompts have a positive priority (all of them, after
        :meth:`observe`'s drops; a restored or hand-built buffer may differ)."""
        return int((self.priorities() > 0).sum())

    # -- checkpointing -------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The buffer as JSON-ready plain lists (dataset indices, pass rates as Python floats,
        whose JSON form round-trips exactly, and visit counts) plus its settings."""
        return {
            "index": [int(i) for i in self._entries],
            "pass_rate": [float(e[0]) for e in self._entries.values()],
            "visits": [int(e[1]) for e in self._entries.values()],
            "capacity": self.capacity,
            "ema": self.ema,
            "max_visits": self.max_visits,
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Replaces the entries by a :meth:`state_dict`'s (values may be numpy scalars /
        arrays as read from a checkpoint). The saved settings are not checked: a resumed run
        may change ``ema`` or ``capacity``; the buffer is trimmed to this ``capacity``.

        Raises:
          ValueError: malformed state (missing keys, unequal lengths, a rate outside [0, 1]).
        """
        try:
            index = np.asarray(state["index"], np.int64).reshape(-1).tolist()
            rate = np.asarray(state["pass_rate"], np.float64).reshape(-1).tolist()
            visits = np.asarray(state["visits"], np.int64).reshape(-1).tolist()
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"PromptBuffer.restore: malformed state ({e})") from e
        if not len(index) == len(rate) == len(visits):
            raise ValueError(
                f"PromptBuffer.restore: {len(index)} indices, {len(rate)} pass rates and "
                f"{len(visits)} visit counts"
            )
        if any(not 0.0 <= r <= 1.0 for r in rate):
            raise ValueError("PromptBuffer.restore: a pass rate outside [0, 1]")
        rows = zip(index, rate, visits, strict=True)
        self._entries = {int(i): [float(r), int(v)] for i, r, v in rows}
        self._trim()


def mix_batch(
    buffer: PromptBuffer,
    draw_fresh: Callable[[int], np.ndarray],
    batch_size: int,
    replay_fraction: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, int]:
    """The dataset indices of one batch: fresh prompts, then replayed ones.

    ``k = min(floor(replay_fraction * batch_size), buffer.num_drawable())`` prompts are
    planned from the buffer; ``draw_fresh(batch_size - k)`` (e.g. ``DataIterator.next_indices``)
    gives the fresh ones; the replayed ones are :meth:`PromptBuffer.sample` d excluding the
    fresh ones (no prompt twice in a batch); if the exclusion leaves fewer than ``k``, the
    shortfall is drawn fresh too.

    Returns:
      ``(int64[batch_size] indices, replayed)``: fresh indices first, then the ``replayed``
      buffer draws.
    """
    planned = min(int(math.floor(replay_fraction * batch_size)), buffer.num_drawable())
    fresh = np.asarray(draw_fresh(batch_size - planned), np.int64)
    replay = buffer.sample(planned, rng, exclude=fresh.tolist())
    if len(replay) < planned:
        more = np.asarray(draw_fresh(planned - len(replay)), np.int64)
        fresh = np.concatenate([fresh, more])
    return np.concatenate([fresh, replay]).astype(np.int64), int(len(replay))
