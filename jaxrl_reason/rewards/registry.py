"""Reward components by name, with declared inputs: the one route from responses to rewards.

A component is a host function of a :class:`RewardContext` (decoded responses, their task
examples, lengths, groups, the verifier's outcome, ...) returning ``float32[B]``, or a dict
whose ``"reward"`` entry is that and whose other entries fill optional
:class:`~jaxrl_reason.rollout.Trajectories` fields (a step scorer returns ``step_scores``).
``config.reward.weights`` switches each one on by weight::

    total[i]  = sum_k w_k * r_k[i]          over components placed on the reward
    bonus[i]  = sum_k w_k * r_k[i]          over components placed on the advantage

Components placed on the *advantage* (the exploration bonuses of Song, Kempe & Munos 2025,
arXiv 2509.06941, eq. of historical / batch exploration: ``A_final = Ahat + c * b``) are
added by the credit phase after the estimator's normalisation, to every loss-mask token;
``explore.placement = "reward"`` moves them into the reward before normalisation instead.

``needs`` names the :class:`RewardContext` fields a component reads; the trainer fills the
ones that cost something (``self_certainty`` needs a forward pass) only when a component
asks. ``supplies`` names the Trajectories fields it fills; config validation uses it.

Adding a component::

    @register_reward("my_bonus", needs=("responses",))
    def my_bonus(ctx):
        return np.asarray([len(r) > 0 for r in ctx.responses], np.float32)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "RewardComponent",
    "RewardContext",
    "RewardOutput",
    "compute_rewards",
    "get_reward",
    "register_reward",
    "reward_names",
]


@dataclasses.dataclass
class RewardContext:
    """What reward components read about a batch of ``B`` responses (host values).

    Attributes:
      responses: decoded response texts.
      examples: the task example of each row (``.answer`` is the gold answer).
      lengths: ``int[B]`` response lengths in tokens; ``max_len`` the sampler's limit.
      group_ids: ``int32[B]`` prompt group of each row.
      correct: ``float32[B]`` the task verifier's outcome (computed once per step).
      keys: canonical final-answer key of each response (``"<none>"`` when absent).
      task: the task (its ``verify_format``, and ``step_labels`` for oracle steps).
      max_steps: ``S``, the width of per-step fields.
      config: the experiment's ``config.reward`` / ``config.explore`` settings (a mapping).
      state: run state components keep across steps (the exploration answer history).
      self_certainty: ``float32[B]`` mean self-certainty (filled on demand by the trainer).
      trajectories: the batch's :class:`~jaxrl_reason.rollout.Trajectories` (token ids,
        ``segment_id``), for components that run a model over the responses (``prm``).
      tokenizer: the policy's tokenizer (``judge`` decodes each step's text with it).
      judge_fn: ``prompts: list[str] -> list[list[str]]`` (N sampled judgements per prompt),
        built by the trainer when the ``judge`` component runs.
    """

    responses: Sequence[str]
    examples: Sequence[Any]
    lengths: np.ndarray
    group_ids: np.ndarray
    max_len: int
    correct: np.ndarray
    keys: Sequence[str]
    task: Any = None
    max_steps: int = 8
    config: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    state: dict[str, Any] = dataclasses.field(default_factory=dict)
    self_certainty: np.ndarray | None = None
    trajectories: Any = None
    tokenizer: Any = None
    judge_fn: Callable[[Sequence[str]], list[list[str]]] | None = None

    @property
    def answers(self) -> list[str]:
        """Gold answer of each row."""
        return [e.answer for e in self.examples]

    @property
    def prompt_ids(self) -> list[Hashable]:
        """Example id of each row (the exploration history's key)."""
        return [e.id for e in self.examples]


@dataclasses.dataclass(frozen=True)
class RewardComponent:
    """A registered component: ``fn(ctx) -> float32[B] | dict``, its inputs and outputs.

    Attributes:
      placement: ``"reward"`` (mixed into the scalar reward) or ``"advantage"`` (added to the
        advantage after the estimator; the exploration bonuses).
      needs: :class:`RewardContext` fields read beyond the always-present ones.
      supplies: Trajectories fields the component fills (dict output).
    """

    name: str
    fn: Callable[[RewardContext], Any]
    placement: str = "reward"
    needs: tuple[str, ...] = ()
    supplies: tuple[str, ...] = ()


_COMPONENTS: dict[str, RewardComponent] = {}


def register_reward(
    name: str,
    *,
    placement: str = "reward",
    needs: Sequence[str] = (),
    supplies: Sequence[str] = (),
) -> Callable:
    """Decorator: registers ``fn(ctx)`` as reward component ``name``."""
    if placement not in ("reward", "advantage"):
        raise ValueError(f"placement={placement!r}: use 'reward' or 'advantage'")

    def deco(fn):
        if name in _COMPONENTS and _COMPONENTS[name].fn is not fn:
            raise ValueError(f"reward component {name!r} is already registered")
        _COMPONENTS[name] = RewardComponent(name, fn, placement, tuple(needs), tuple(supplies))
        return fn

    return deco


def get_reward(name: str) -> RewardComponent:
    """The component registered as ``name``; ``ValueError`` lists the valid names."""
    _load_builtins()
    if name not in _COMPONENTS:
        raise ValueError(
            f"unknown reward component {name!r}; registered: {', '.join(reward_names())}"
        )
    return _COMPONENTS[name]


def reward_names() -> list[str]:
    """Sorted names of every registered component."""
    _load_builtins()
    return sorted(_COMPONENTS)


def _load_builtins() -> None:
    from jaxrl_reason.rewards import components  # noqa: F401  (registers on import)


@dataclasses.dataclass
class RewardOutput:
    """Result of :func:`compute_rewards`.

    Attributes:
      total: ``float32[B]`` the scalar reward (reward-placed components, weighted).
      bonus: ``float32[B]`` the advantage bonus (advantage-placed components, weighted).
      components: every computed component, unweighted (logged as ``reward/<name>``).
      fields: Trajectories fields the components filled (e.g. ``step_scores``).
    """

    total: np.ndarray
    bonus: np.ndarray
    components: dict[str, np.ndarray]
    fields: dict[str, np.ndarray]


def compute_rewards(
    weights: Mapping[str, float],
    ctx: RewardContext,
    *,
    also: Sequence[str] = (),
    placement: Mapping[str, str] | None = None,
) -> RewardOutput:
    """Computes the components with a non-zero weight (and those in ``also``) and mixes them.

    Args:
      weights: ``{name: weight}`` (``config.reward.weights``); 0 switches a component off.
      ctx: the batch's :class:`RewardContext`.
      also: components to run for their outputs even at weight 0 (a step scorer).
      placement: overrides of components' placements (``{"explore": "reward"}``).

    Raises:
      ValueError: an unknown name, a non-finite weight, or a component output of the wrong
        shape (naming the component).
    """
    import math

    b = len(ctx.responses)
    total = np.zeros(b, np.float32)
    bonus = np.zeros(b, np.float32)
    comps: dict[str, np.ndarray] = {}
    fields: dict[str, np.ndarray] = {}
    placement = dict(placement or {})
    wanted = [n for n, w in weights.items() if w] + [n for n in also if not weights.get(n)]
    for name in wanted:
        comp = get_reward(name)
        w = weights.get(name, 0.0)
        if isinstance(w, bool) or not isinstance(w, int | float) or not math.isfinite(w):
            raise ValueError(f"reward.weights.{name}={w!r}: use a finite float")
        out = comp.fn(ctx)
        if isinstance(out, Mapping):
            fields.update({k: v for k, v in out.items() if k != "reward"})
            out = out.get("reward")
        if out is None:
            continue
        r = np.asarray(out, np.float32)
        if r.shape != (b,):
            raise ValueError(f"reward component {name!r} returned shape {r.shape}, expected ({b},)")
        comps[name] = r
        if placement.get(name, comp.placement) == "advantage":
            bonus += np.float32(w) * r
        else:
            total += np.float32(w) * r
    return RewardOutput(total, bonus, comps, fields)
