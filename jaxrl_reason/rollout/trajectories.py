"""``Trajectories``: the one contract every phase of an RL step reads and writes.

A rollout strategy (:mod:`jaxrl_reason.rollout.strategies`) turns prompts into
``Trajectories``; the score phase fills rewards and process signals; the credit phase reads
the fields its estimator declares (``credit.inputs(name)``) and writes advantages; the update
phase reads tokens, masks, behaviour log-probs and advantages. Every array has a fixed,
padded shape, so each phase compiles once per bucket.

Layout (verl's split layout: the prompt is left-padded, the response right-padded):

==================  ==============  =========================================================
field               shape / dtype   meaning
==================  ==============  =========================================================
``prompt_tokens``   int32[B, P]     prompt ids, left-padded
``prompt_mask``     bool[B, P]      real prompt tokens
``tokens``          int32[B, R]     response ids (policy tokens and, in multi-turn episodes,
                                    tool / environment observation tokens), right-padded
``attention_mask``  bool[B, R]      real response tokens (policy and observation)
``loss_mask``       float32[B, R]   tokens the policy generated: 1, observations and padding: 0
``old_logprobs``    float32[B, R]   behaviour log-probs at sampling time (0 off the loss mask)
``group_id``        int32[B]        prompt group (GRPO / RLOO baselines)
``segment_id``      int32[B, R]     step (or turn) index of each response token, 0-based;
                                    -1 on padding
``lengths``         int32[B]        response length (``attention_mask.sum(-1)``)
``finish_reason``   int32[B]        0 = stop token, 1 = length limit
==================  ==============  =========================================================

Optional fields (``None`` until a strategy, the trainer or a reward component fills them;
:data:`FIELD_SOURCES` says who does):

==================  ==============  =========================================================
``reward``          float32[B]      scalar reward (weighted components, ``reward.weights``)
``token_rewards``   float32[B, R]   the reward on each row's last response token
``ref_logprobs``    float32[B, R]   reference-policy log-probs
``process_rewards`` float32[B, R]   token process rewards of the online implicit PRM,
                                    ``beta (log pi_prm - log pi_ref)``, 0 off the loss mask
``values``          float32[B, R]   critic values (PPO value head)
``step_scores``     float32[B, S]   a step scorer's score of each step (PRM, oracle)
``step_verdicts``   bool[B, N, S]   N judgements per step, True = the step is wrong (CAPO)
``step_values``     float32[B, S]   Monte Carlo values of the state before each step
``step_value_mask`` bool[B, S]      True where ``step_values`` is an estimate (the others
                                    are filled by the estimator from the outcome)
``parent`` ...      [N] forest      ``parent`` int32, ``is_leaf`` / ``node_valid`` bool,
                                    ``leaf_reward`` float32 over the forest's nodes
``tok_node``        int32[B, R]     the forest node that owns each token (-1: none)
``tree_id``         int32[B]        which of a prompt's trees a row belongs to
``leaf_row``        int32[N]        the row of each leaf node (-1: not a leaf); the score
                                    phase fills ``leaf_reward`` from it
``anchor_ids``      int32[B, S]     per-turn anchor-state id (GiGPO)
``answer_probs``    float32[B, S]   policy probability of the gold answer after each turn
``turn_mask``       bool[B, S]      real turns
``advantages``      float32[B, R]   written by the credit phase, 0 off the loss mask
``returns``         float32[B, R]   the estimator's returns (critic targets for PPO)
``update_mask``     float32[B, R]   the mask the update trains on when the estimator narrows
                                    ``loss_mask`` (SPO's ``p < rho``); None = ``loss_mask``
==================  ==============  =========================================================

``S`` is ``rollout.max_steps``: responses with more steps fold the extra ones into step
``S - 1``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np
from flax import struct

Array = Any  # jax.Array or np.ndarray: strategies build on the host, phases on device

__all__ = ["FIELD_SOURCES", "OPTIONAL_FIELDS", "REQUIRED_FIELDS", "Trajectories"]


@struct.dataclass
class Trajectories:
    """A batch of rollouts in the layout of the module docstring (a pytree).

    Build one with :meth:`create`; add fields with :meth:`replace` (every phase returns a new
    value and never mutates its input).
    """

    prompt_tokens: Array
    prompt_mask: Array
    tokens: Array
    attention_mask: Array
    loss_mask: Array
    old_logprobs: Array
    group_id: Array
    segment_id: Array
    lengths: Array
    finish_reason: Array
    reward: Array | None = None
    token_rewards: Array | None = None
    ref_logprobs: Array | None = None
    process_rewards: Array | None = None
    values: Array | None = None
    step_scores: Array | None = None
    step_verdicts: Array | None = None
    step_values: Array | None = None
    step_value_mask: Array | None = None
    parent: Array | None = None
    is_leaf: Array | None = None
    node_valid: Array | None = None
    leaf_reward: Array | None = None
    tok_node: Array | None = None
    tree_id: Array | None = None
    leaf_row: Array | None = None
    anchor_ids: Array | None = None
    answer_probs: Array | None = None
    turn_mask: Array | None = None
    advantages: Array | None = None
    returns: Array | None = None
    update_mask: Array | None = None

    @property
    def batch_size(self) -> int:
        """``B``, the number of rows."""
        return int(self.tokens.shape[0])

    @property
    def response_width(self) -> int:
        """``R``, the padded response length."""
        return int(self.tokens.shape[1])

    def present(self) -> frozenset[str]:
        """Names of the fields that hold a value (not ``None``)."""
        return frozenset(
            f.name for f in dataclasses.fields(self) if getattr(self, f.name) is not None
        )

    def to_host(self) -> Trajectories:
        """A copy with every array as a NumPy array (one device-to-host transfer)."""
        return jax.tree.map(np.asarray, self)

    def rows(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        """The per-row arrays (``[B, ...]`` fields, forest excluded) at rows ``idx``, as a
        dict: the layout the update step reads (host arrays)."""
        out = {}
        for name in ROW_FIELDS:
            v = getattr(self, name)
            if v is not None:
                out[name] = np.asarray(v)[idx]
        return out

    def check(self) -> Trajectories:
        """Raises ``ValueError`` naming the first field whose shape breaks the contract."""
        b, r = np.shape(self.tokens)
        p = np.shape(self.prompt_tokens)[1]
        expect = {
            "prompt_tokens": (b, p),
            "prompt_mask": (b, p),
            "attention_mask": (b, r),
            "loss_mask": (b, r),
            "old_logprobs": (b, r),
            "group_id": (b,),
            "segment_id": (b, r),
            "lengths": (b,),
            "finish_reason": (b,),
            "reward": (b,),
            "token_rewards": (b, r),
            "ref_logprobs": (b, r),
            "process_rewards": (b, r),
            "values": (b, r),
            "tok_node": (b, r),
            "tree_id": (b,),
            "advantages": (b, r),
            "returns": (b, r),
            "update_mask": (b, r),
        }
        for name, shape in expect.items():
            v = getattr(self, name)
            if v is not None and tuple(np.shape(v)) != shape:
                raise ValueError(
                    f"Trajectories.{name} has shape {tuple(np.shape(v))}, expected {shape} "
                    f"(B={b} rows, R={r} response tokens, P={p} prompt tokens)"
                )
        for name in (
            "step_scores",
            "step_values",
            "step_value_mask",
            "anchor_ids",
            "answer_probs",
            "turn_mask",
        ):
            v = getattr(self, name)
            if v is not None and (np.ndim(v) != 2 or np.shape(v)[0] != b):
                raise ValueError(f"Trajectories.{name} has shape {np.shape(v)}, expected [{b}, S]")
        if (
            self.step_value_mask is not None
            and self.step_values is not None
            and np.shape(self.step_value_mask) != np.shape(self.step_values)
        ):
            raise ValueError(
                f"Trajectories.step_value_mask has shape {np.shape(self.step_value_mask)}, "
                f"expected step_values' {np.shape(self.step_values)}"
            )
        return self


#: Fields every strategy fills.
REQUIRED_FIELDS: tuple[str, ...] = tuple(
    f.name for f in dataclasses.fields(Trajectories) if f.default is dataclasses.MISSING
)
#: Fields that stay ``None`` until someone fills them.
OPTIONAL_FIELDS: tuple[str, ...] = tuple(
    f.name for f in dataclasses.fields(Trajectories) if f.default is not dataclasses.MISSING
)
#: Per-row fields (leading dimension B) that the update step may read.
ROW_FIELDS: tuple[str, ...] = (
    "prompt_tokens",
    "prompt_mask",
    "tokens",
    "attention_mask",
    "loss_mask",
    "old_logprobs",
    "ref_logprobs",
    "values",
    "advantages",
    "returns",
    "update_mask",
)

#: Who fills each optional field (config validation quotes this in its messages).
FIELD_SOURCES: dict[str, str] = {
    "reward": "the score phase (reward.weights)",
    "token_rewards": "the score phase (reward.weights)",
    "ref_logprobs": "the trainer (a forward pass of the reference policy)",
    "process_rewards": "the trainer's online implicit PRM (implicit_prm.online=True)",
    "values": "the trainer's critic (algo.value_head=True)",
    "step_scores": "a step scorer (reward.step_scorer='oracle_steps' on a task with oracle steps, "
    "e.g. task.name='arith_chain', or 'prm' with prm.path)",
    "step_verdicts": "a step judge (reward.step_scorer='oracle_steps' on a task with oracle steps, "
    "e.g. task.name='arith_chain', or 'judge': CAPO's generative judge)",
    "step_values": "rollout.strategy='vine' (Monte Carlo continuations from step prefixes)",
    "step_value_mask": "rollout.strategy='vine' (which states the continuations estimated)",
    "parent": "rollout.strategy='tree'",
    "is_leaf": "rollout.strategy='tree'",
    "node_valid": "rollout.strategy='tree'",
    "leaf_reward": "rollout.strategy='tree' (scored leaves)",
    "tok_node": "rollout.strategy='tree'",
    "tree_id": "rollout.strategy='tree'",
    "leaf_row": "rollout.strategy='tree'",
    "anchor_ids": "rollout.strategy='env' (multi-turn environments)",
    "answer_probs": "rollout.strategy='env' (multi-turn environments)",
    "turn_mask": "rollout.strategy='env' (multi-turn environments)",
    "advantages": "the credit phase",
    "returns": "the credit phase",
    "update_mask": "the credit phase (an estimator's loss-mask transform, e.g. spo_chain's "
    "prob_mask)",
}
