"""Weighted reward mixing from a config dict ``{component name: weight}``.

The total reward of sample ``i`` is ``sum_k w_k * r_k[i]``. Every component array is also
returned, unweighted, so the loop can log ``reward/<name>`` next to the total.

Built-in components (computed by :class:`RewardMixer` from :class:`RewardInputs`):

==============  ==============================================================================
``correct``     1/0 answer equivalence, :func:`jaxrl_reason.rewards.verify.verify_batch`
``format``      1/0 final answer present in the task's format, :func:`shaping.format_reward`
``overlong``    DAPO soft overlong punishment, :func:`shaping.overlong_penalty`
``length``      linear length cost, :func:`shaping.length_penalty`
``kimi_length`` Kimi k1.5 group length reward, :func:`shaping.kimi_length_reward`
==============  ==============================================================================

Anything else (exploration bonuses, process rewards) is computed by its owner and passed in
``extra`` under the name its weight uses.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np

__all__ = ["BUILTIN_COMPONENTS", "RewardInputs", "RewardMixer", "mix_rewards"]


def mix_rewards(
    components: Mapping[str, np.ndarray], weights: Mapping[str, float]
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Weighted sum of reward components.

    Args:
      components: ``{name: float[B]}`` (numpy or jax arrays).
      weights: ``{name: weight}``; every name must be in ``components``. Components without a
        weight are still returned for logging but do not enter the total.
    Returns:
      ``(total float32[B], {name: float32[B]})`` with ``total = sum_k w_k * components[k]``.
    Raises:
      ValueError: a weighted name has no component, a weight is not a finite number, or the
        component shapes differ.
    """
    if not weights:
        raise ValueError("mix_rewards: weights is empty; give e.g. {'correct': 1.0}")
    missing = sorted(set(weights) - set(components))
    if missing:
        raise ValueError(
            f"mix_rewards: weights name {missing} but components are {sorted(components)}; "
            "compute them or remove them from the reward config"
        )
    arrays = {k: np.asarray(v, dtype=np.float32) for k, v in components.items()}
    shapes = {k: a.shape for k, a in arrays.items()}
    if len(set(shapes.values())) > 1 or any(len(s) != 1 for s in shapes.values()):
        raise ValueError(f"mix_rewards: components must all be float[B]; got shapes {shapes}")
    b = next(iter(shapes.values()))[0]
    total = np.zeros(b, dtype=np.float32)
    for name, w in weights.items():
        if isinstance(w, bool) or not isinstance(w, int | float) or not math.isfinite(w):
            raise ValueError(f"mix_rewards: weight for {name!r} is {w!r}; use a finite float")
        total += np.float32(w) * arrays[name]
    return total, arrays


@dataclasses.dataclass
class RewardInputs:
    """What the built-in components read. Fields a component does not use may be None.

    Attributes:
      responses: ``B`` decoded responses.
      answers: ``B`` gold answers (one per response: repeat per sample).
      lengths: ``int[B]`` response lengths in tokens (``Rollout.lengths``).
      group_ids: ``int32[B]`` prompt group per response (``Rollout.group_ids``).
      max_len: the sampler's ``max_new_tokens``.
    """

    responses: Sequence[str]
    answers: Sequence[str] | None = None
    lengths: np.ndarray | None = None
    group_ids: np.ndarray | None = None
    max_len: int | None = None


def _need(inputs: RewardInputs, name: str, *fields: str) -> None:
    for f in fields:
        if getattr(inputs, f) is None:
            raise ValueError(f"reward component {name!r} needs RewardInputs.{f}; it is None")


class RewardMixer:
    """Computes the weighted components named in a reward config and mixes them.

    Args:
      weights: ``{name: weight}``, e.g. ``{"correct": 1.0, "format": 0.1, "overlong": 1.0}``.
      fmt: the task's answer format, for ``correct`` and ``format``.
      overlong_buffer: DAPO's ``L_cache`` for ``overlong`` (tokens).
      length_coef: scale of ``length``.
      verify_timeout_s: per-item time limit of the verifier.
      verify_batch_s: optional time budget for a batch's math-verify calls.
    """

    def __init__(
        self,
        weights: Mapping[str, float],
        *,
        fmt: str = "auto",
        overlong_buffer: int = 64,
        length_coef: float = 1.0,
        verify_timeout_s: float | None = None,
        verify_batch_s: float | None = None,
    ):
        self.weights = dict(weights)
        self.fmt = fmt
        self.overlong_buffer = overlong_buffer
        self.length_coef = length_coef
        self.verify_timeout_s = verify_timeout_s
        self.verify_batch_s = verify_batch_s
        if not self.weights:
            raise ValueError("RewardMixer: weights is empty; give e.g. {'correct': 1.0}")

    def _builtin(self, cache: dict) -> dict[str, Callable[[RewardInputs], np.ndarray]]:
        from jaxrl_reason.rewards import shaping
        from jaxrl_reason.rewards import verify as verify_lib

        def correct(x: RewardInputs) -> np.ndarray:
            if "correct" in cache:  # kimi_length needs it too: verify once per call
                return cache["correct"]
            _need(x, "correct", "answers")
            kw = {}
            if self.verify_timeout_s is not None:
                kw["timeout_s"] = self.verify_timeout_s
            cache["correct"] = verify_lib.verify_batch(
                x.responses, x.answers, fmt=self.fmt, max_batch_s=self.verify_batch_s, **kw
            )
            return cache["correct"]

        def fmt_(x: RewardInputs) -> np.ndarray:
            fmt = self.fmt if self.fmt in shaping.FORMAT_CHOICES else "auto"
            return shaping.format_reward(x.responses, fmt)

        def overlong(x: RewardInputs) -> np.ndarray:
            _need(x, "overlong", "lengths", "max_len")
            buf = min(self.overlong_buffer, x.max_len)
            return np.asarray(shaping.overlong_penalty(x.lengths, x.max_len, buf))

        def length(x: RewardInputs) -> np.ndarray:
            _need(x, "length", "lengths", "max_len")
            return np.asarray(shaping.length_penalty(x.lengths, x.max_len, self.length_coef))

        def kimi(x: RewardInputs) -> np.ndarray:
            _need(x, "kimi_length", "lengths", "group_ids", "answers")
            ok = correct(x)
            g = np.asarray(x.group_ids)
            return np.asarray(shaping.kimi_length_reward(x.lengths, ok, g, int(g.max()) + 1))

        return {
            "correct": correct,
            "format": fmt_,
            "overlong": overlong,
            "length": length,
            "kimi_length": kimi,
        }

    def __call__(
        self, inputs: RewardInputs, extra: Mapping[str, np.ndarray] | None = None
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Returns ``(total float32[B], {name: float32[B]})`` for the configured weights.

        Args:
          inputs: responses, answers, lengths, ... for the built-in components.
          extra: components computed elsewhere (e.g. ``{"novelty": bonus}``); a name here
            overrides a built-in of the same name.
        Raises:
          ValueError: a weighted name is neither built in nor in ``extra`` (names both lists).
        """
        extra = dict(extra or {})
        builtin = self._builtin({})
        unknown = sorted(set(self.weights) - set(builtin) - set(extra))
        if unknown:
            raise ValueError(
                f"reward weights name unknown components {unknown}; built-in are "
                f"{sorted(builtin)}, passed in extra: {sorted(extra)}"
            )
        comps: dict[str, np.ndarray] = {}
        for name in self.weights:
            comps[name] = extra[name] if name in extra else builtin[name](inputs)
        for name, v in extra.items():
            comps.setdefault(name, v)
        return mix_rewards(comps, self.weights)


BUILTIN_COMPONENTS = ("correct", "format", "overlong", "length", "kimi_length")
