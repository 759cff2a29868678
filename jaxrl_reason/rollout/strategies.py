"""Rollout strategies: prompts in, :class:`~jaxrl_reason.rollout.trajectories.Trajectories` out.

A strategy owns how responses are generated for a batch of task examples. Every strategy
fills the required fields of the contract (tokens, masks, behaviour log-probs, groups and
per-token step ids) and declares in :attr:`RolloutStrategy.supplies` the optional fields it
fills too, so that config validation can check an estimator's inputs before anything loads.

Registered here: ``group`` (``n`` i.i.d. samples per prompt, the GRPO / RLOO / PPO rollout);
in :mod:`jaxrl_reason.rollout.multiturn`: ``env`` (multi-turn environment episodes).
Tree, Monte Carlo (vine) and multi-turn environment strategies register the same way::

    @register_strategy
    class TreeStrategy(RolloutStrategy):
        name = "tree"
        supplies = frozenset({"parent", "is_leaf", "node_valid", "tok_node", "tree_id"})

        def collect(self, policy, examples, key) -> Trajectories: ...
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import jax
import numpy as np

from jaxrl_reason.parallel.host import host_tree
from jaxrl_reason.rollout.chat import chat_prompt_ids, decode_responses, stop_token_ids
from jaxrl_reason.rollout.sampler import SamplingConfig, left_pad, sample
from jaxrl_reason.rollout.steps import response_segment_ids
from jaxrl_reason.rollout.trajectories import Trajectories

__all__ = [
    "GroupStrategy",
    "RolloutSettings",
    "RolloutStrategy",
    "get_strategy",
    "register_strategy",
    "strategy_names",
]

_STRATEGIES: dict[str, type[RolloutStrategy]] = {}


@dataclasses.dataclass(frozen=True)
class RolloutSettings:
    """What every strategy needs besides the policy (built once by the trainer).

    Attributes:
      tokenizer: a ``transformers`` tokenizer with the model's chat template.
      task: the :class:`jaxrl_reason.data.Task` whose prompts are sampled (prompt building
        and, when it has ``split_steps``, step boundaries).
      sampling: the :class:`SamplingConfig` (``n`` = samples per prompt).
      step_rule: how responses are cut into steps (:func:`response_segment_ids`).
      max_steps: ``S``, the width of per-step fields; later steps fold into step ``S - 1``.
      sample_fn: ``sample(model, tokens, mask, key, cfg) -> Rollout``; defaults to
        :func:`jaxrl_reason.rollout.sample` (the trainer passes
        :func:`jaxrl_reason.rollout.sample_on_mesh` bound to its mesh).
      options: strategy settings by config block: ``options["tree"]`` is
        ``config.rollout.tree`` (the tree shape), ``options["env"]`` is ``config.rollout.env``,
        and ``options["answer_probs"]`` asks the env strategy for IGPO's answer probabilities.
    """

    tokenizer: Any
    task: Any
    sampling: SamplingConfig
    step_rule: str = "auto"
    max_steps: int = 8
    sample_fn: Callable[..., Any] | None = None
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)


class RolloutStrategy(abc.ABC):
    """Base class. Subclasses set :attr:`name`, :attr:`supplies` and implement
    :meth:`collect`."""

    name: ClassVar[str] = ""
    #: Optional ``Trajectories`` fields this strategy fills (beyond the required ones).
    supplies: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, settings: RolloutSettings):
        self.settings = settings
        #: Host-side numbers about the last :meth:`collect` (budget spent, shapes); the
        #: trainer logs them under ``rollout/<name>`` every step.
        self.last_stats: dict[str, float] = {}

    @abc.abstractmethod
    def collect(self, policy: Any, examples: Sequence[Any], key: jax.Array) -> Trajectories:
        """Generates responses for ``examples`` with ``policy`` and returns them as host
        (NumPy) :class:`Trajectories`. A pure function of ``(policy, examples, key)``."""

    # -- helpers shared by strategies ---------------------------------------------------------

    def prompt_batch(self, examples: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
        """Left-padded chat prompts ``(int32[B, P], bool[B, P])`` of ``examples``."""
        s = self.settings
        ids = chat_prompt_ids(s.tokenizer, s.task, examples)
        pad = s.tokenizer.pad_token_id if s.tokenizer.pad_token_id is not None else 0
        return left_pad(ids, pad)

    def segment_ids(self, tokens: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """``int32[B, R]`` step ids of sampled responses (-1 on padding)."""
        s = self.settings
        return response_segment_ids(
            s.tokenizer, tokens, lengths, rule=s.step_rule, task=s.task, max_steps=s.max_steps
        )


def register_strategy(cls: type[RolloutStrategy]) -> type[RolloutStrategy]:
    """Class decorator: makes ``cls`` selectable as ``rollout.strategy = cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__qualname__}: set the class attribute 'name'")
    if cls.name in _STRATEGIES and _STRATEGIES[cls.name] is not cls:
        raise ValueError(f"rollout strategy {cls.name!r} is already registered")
    _STRATEGIES[cls.name] = cls
    return cls


def get_strategy(name: str) -> type[RolloutStrategy]:
    """The strategy class registered as ``name``; ``ValueError`` lists the valid names."""
    if name not in _STRATEGIES:
        raise ValueError(
            f"rollout.strategy={name!r} is not a registered rollout strategy; "
            f"available: {', '.join(strategy_names())}"
        )
    return _STRATEGIES[name]


def strategy_names() -> list[str]:
    """Sorted names of the registered strategies."""
    return sorted(_STRATEGIES)


@register_strategy
class GroupStrategy(RolloutStrategy):
    """``n`` independent samples per prompt (``settings.sampling.n``), rows grouped by prompt.

    The prompt is prefilled once and its KV cache copied to its ``n`` samples (see
    :func:`jaxrl_reason.rollout.sample`). Row ``b * n + j`` is sample ``j`` of prompt ``b``
    and has ``group_id = b``.
    """

    name = "group"
    supplies = frozenset()

    def collect(self, policy, examples, key) -> Trajectories:
        s = self.settings
        tokens, mask = self.prompt_batch(examples)
        fn = s.sample_fn or sample
        # to_host: on a mesh spanning several hosts the rows are spread over all of them.
        ro = host_tree(fn(policy, tokens, mask, key, s.sampling))
        resp_mask = ro.response_mask.astype(bool)
        # The same budget numbers the tree strategy reports, so that runs of both compare at
        # equal generated tokens: i.i.d. samples share nothing but the prompt.
        decoded = float(ro.lengths.sum())
        self.last_stats = {
            "leaves": float(ro.lengths.shape[0]),
            "decoded_tokens": decoded,
            "leaf_tokens": decoded,
        }
        return Trajectories(
            prompt_tokens=ro.prompt_tokens.astype(np.int32),
            prompt_mask=ro.prompt_mask.astype(bool),
            tokens=ro.tokens.astype(np.int32),
            attention_mask=resp_mask,
            loss_mask=resp_mask.astype(np.float32),
            old_logprobs=ro.logprobs.astype(np.float32),
            group_id=ro.group_ids.astype(np.int32),
            segment_id=self.segment_ids(ro.tokens, ro.lengths),
            lengths=ro.lengths.astype(np.int32),
            finish_reason=ro.finish_reason.astype(np.int32),
        )


def sampling_config(rollout_cfg: Any, tokenizer: Any, *, n: int | None = None) -> SamplingConfig:
    """:class:`SamplingConfig` from ``config.rollout`` (stop on EOS and end-of-turn)."""
    return SamplingConfig(
        max_new_tokens=int(rollout_cfg.max_new_tokens),
        temperature=float(rollout_cfg.temperature),
        top_k=int(rollout_cfg.get("top_k", 0)),
        top_p=float(rollout_cfg.get("top_p", 1.0)),
        n=int(rollout_cfg.n_samples if n is None else n),
        stop_token_ids=tuple(stop_token_ids(tokenizer)),
        prompt_bucket=int(rollout_cfg.get("prompt_bucket", 16)),
        decode_layers=str(rollout_cfg.get("decode_layers", "scan")),
    )


def decode(tokenizer: Any, traj: Trajectories) -> list[str]:
    """Each row's response text (special tokens dropped)."""
    return decode_responses(tokenizer, np.asarray(traj.tokens), np.asarray(traj.lengths))


# The multi-turn environment strategy registers itself (imported last: it subclasses the base
# class above).
from jaxrl_reason.rollout import multiturn as _multiturn  # noqa: E402, F401
