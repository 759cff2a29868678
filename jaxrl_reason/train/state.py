"""The RL train state's layout, owned in one place (training, evaluation and export use it).

The state is ``{"params", "value_head", "opt_state"}``: the policy's ``nnx.Param`` s, the
PPO critic head (``None`` without one) and the optimiser state of the pair
``(params, value_head)``. The optimiser's trainable subset comes from ``config.optim``; a
value head always trains, whatever subset of the policy does (it starts at zero).

With PRIME's online PRM (``implicit_prm.online``, :mod:`jaxrl_reason.train.implicit_prm`) the
state also holds
``"prm": {"params", "opt_state"}``: the PRM's parameters (the policy's tree, initialised from
the reference) and its optimiser state over ``(prm params, None)``, so checkpoints and exact
resume carry them. Without it the key is absent and older checkpoints restore unchanged.
"""

from __future__ import annotations

from typing import Any

import jax
from flax import nnx

__all__ = [
    "abstract_state",
    "build_optimizer_for",
    "init_value_head_for",
    "restore_policy",
    "updates_per_step",
]


def updates_per_step(config: Any) -> int:
    """Optimiser updates per RL step: ``ppo_epochs * rollouts / mini_batch_size``."""
    rollouts = config.rollout.batch_prompts * config.rollout.n_samples
    return int(config.train.ppo_epochs) * max(rollouts // int(config.train.mini_batch_size), 1)


def init_value_head_for(config: Any, hidden_size: int):
    """A zero value head when ``algo.value_head`` is set, else ``None``."""
    from jaxrl_reason.train.step import init_value_head

    return init_value_head(hidden_size) if config.algo.get("value_head", False) else None


def build_optimizer_for(config: Any, params: Any, value_head: Any):
    """The :class:`jaxrl_reason.train.optim.Optimizer` of the pair ``(params, value_head)``.

    With a value head and a trainable subset of the policy (``optim.trainable`` = ``last_k``
    or ``regex``), the head's paths (``"1/..."``) are added to the subset: a fresh head must
    never be frozen.
    """
    from jaxrl_reason.train.optim import build_optimizer

    optim_cfg = dict(config.optim)
    if value_head is not None and optim_cfg.get("trainable", "all") != "all":
        for key in ("also_train_regex", "trainable_regex"):  # last_k mode / regex mode
            extra = optim_cfg.get(key, "")
            optim_cfg[key] = f"{extra}|^1/" if extra else "^1/"
    return build_optimizer(
        optim_cfg,
        (params, value_head),
        total_steps=max(config.total_steps * updates_per_step(config), 1),
    )


def abstract_state(config: Any, model: nnx.Module) -> dict[str, Any]:
    """The train state of ``model`` under ``config`` with the optimiser state as shapes only
    (``jax.eval_shape``): the restore target of a checkpoint when only the policy is needed."""
    _, params, _ = nnx.split(model, nnx.Param, ...)
    value_head = init_value_head_for(config, model.config.hidden_size)
    optimizer = build_optimizer_for(config, params, value_head)
    opt_state = jax.eval_shape(optimizer.tx.init, (params, value_head))
    state = {"params": params, "value_head": value_head, "opt_state": opt_state}
    from jaxrl_reason.train.implicit_prm import build_prm_optimizer, prm_enabled

    if prm_enabled(config):
        prm_tx = build_prm_optimizer(config, params).tx
        state["prm"] = {"params": params, "opt_state": jax.eval_shape(prm_tx.init, (params, None))}
    return state


def restore_policy(config: Any, model: nnx.Module, ckpt_dir: str, step: int) -> nnx.Module:
    """``model`` with its parameters replaced by the policy a run saved at ``step``.

    The restore target comes from :func:`abstract_state`, the same layout the trainer saves
    (so PPO runs whose value head trains beside ``last_k`` layers restore too).
    """
    from jaxrl_reason.train.checkpoint import Checkpointer

    graphdef, _, rest = nnx.split(model, nnx.Param, ...)
    ckpt = Checkpointer(ckpt_dir, save_every=0, handle_signals=False, async_save=False)
    try:
        restored = ckpt.restore(step, abstract_state(config, model))
    finally:
        ckpt.close()
    return nnx.merge(graphdef, restored.state["params"], rest)
