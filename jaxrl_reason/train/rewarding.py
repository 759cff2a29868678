"""Reward components the loop computes beyond the verifier: exploration and label-free rewards.

``config.reward.weights`` names every component and its weight; the built-in ones
(``correct``, ``format``, ``overlong``, ``length``, ``kimi_length``) live in
:class:`jaxrl_reason.rewards.mix.RewardMixer`. This module adds, by name:

- ``explore``: UCB bonus over the final answers seen for the prompt (``config.explore``);
  Song, Kempe & Munos 2025, arXiv 2509.06941.
- ``batch_penalty``: ``-(#same answer in the group - 1) / G``; same paper, batch exploration.
- ``ttrl``: agreement with the group's majority answer, no label used; arXiv 2504.16084.
- ``empo``: share of the group in the sample's answer cluster; arXiv 2504.05812.
- ``self_certainty``: mean over response tokens of ``KL(U || p)`` from the log-prob kernel;
  INTUITOR, arXiv 2505.19590.

The weight of a component is its coefficient (``explore`` with weight 0.2 is the paper's
``c = 0.2``: :class:`~jaxrl_reason.rewards.exploration.ExplorationConfig` runs with
``coef = 1``). Components are computed on the host between device calls, except
``self_certainty``, which needs one forward pass of the policy (jit, kernel, no ``[B,T,V]``).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np

EXTRA_COMPONENTS = ("explore", "batch_penalty", "ttrl", "empo", "self_certainty")


def exploration_config(config: Any):
    """:class:`ExplorationConfig` from ``config.explore`` with ``coef = 1`` (the weight is c)."""
    from jaxrl_reason.rewards.exploration import ExplorationConfig

    e = config.get("explore", None)
    kw = {} if e is None else {k: v for k, v in e.items() if k != "coef"}
    return ExplorationConfig(coef=1.0, **kw)


def answer_keys(texts: Sequence[str]) -> list[str]:
    """Canonical final-answer keys of responses (``"<none>"`` where none is found)."""
    from jaxrl_reason.rewards.canonical import canonical_keys
    from jaxrl_reason.rewards.extract import extract_answer

    return canonical_keys([extract_answer(t)[0] for t in texts])


def extra_components(
    names: Sequence[str],
    *,
    keys: Sequence[str],
    prompt_ids: Sequence[Hashable],
    group_ids: np.ndarray,
    correct: np.ndarray | None,
    history: Any = None,
    explore_cfg: Any = None,
    self_certainty: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """The requested non-built-in components, each ``float32[B]``.

    Args:
      names: component names wanted (others in ``names`` are ignored here).
      keys: canonical answer key per sample; ``prompt_ids``: the example id per sample.
      group_ids: ``int32[B]``; ``correct``: verifier outcome (only for the exploration gate).
      history: the run's :class:`AnswerHistory` (``explore``; updated in place).
      explore_cfg: its :class:`ExplorationConfig`.
      self_certainty: per-sample self-certainty (computed by the caller with the kernel).
    """
    from jaxrl_reason.rewards.canonical import NONE_KEY, keys_to_ids

    out: dict[str, np.ndarray] = {}
    gids = np.asarray(group_ids, np.int32)
    ids = np.asarray(keys_to_ids(keys), np.int32)
    valid = np.asarray([k != NONE_KEY for k in keys])
    if "explore" in names:
        from jaxrl_reason.rewards.exploration import exploration_bonus

        out["explore"] = exploration_bonus(explore_cfg, history, prompt_ids, keys, gids, correct)
    if "batch_penalty" in names:
        from jaxrl_reason.rewards.exploration import batch_repetition_penalty

        out["batch_penalty"] = np.asarray(batch_repetition_penalty(ids, gids), np.float32)
    if "ttrl" in names:
        from jaxrl_reason.rewards.labelfree import ttrl_rewards

        out["ttrl"] = np.asarray(ttrl_rewards(ids, gids, valid)[0], np.float32)
    if "empo" in names:
        from jaxrl_reason.rewards.labelfree import empo_rewards

        out["empo"] = np.asarray(empo_rewards(ids, gids, valid)[0], np.float32)
    if "self_certainty" in names:
        if self_certainty is None:
            raise ValueError("reward.weights has 'self_certainty' but no values were computed")
        out["self_certainty"] = np.asarray(self_certainty, np.float32)
    return out
