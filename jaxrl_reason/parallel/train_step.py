"""The RL train state, update step and sampler placed on a device mesh.

Glue between :mod:`jaxrl_reason.parallel.sharding` (logical names -> ``NamedSharding``) and the
single-device pieces the trainer already has (``train.step.make_update_fn``,
``rollout.sample``). Nothing here changes the math: the same update function is compiled with
explicit ``in_shardings`` / ``out_shardings`` and XLA's SPMD partitioner inserts the
all-gathers (FSDP), reduce-scatters (gradients) and all-reduces (tensor parallelism).

Typical use (what :class:`jaxrl_reason.train.loop.Trainer` does on a mesh)::

    mesh = parallel.make_mesh(config.mesh)
    state, shardings = shard_train_state(params, value_head, tx, mesh)
    update = jit_sharded_update(step.make_update_fn(...), mesh, shardings)
    batch = parallel.global_batch(host_minibatch, mesh, batch_spec(mesh))
    p, vh, o, metrics = update(state["params"], state["value_head"], state["opt_state"], batch)

The optimiser state is created *eagerly* from the already-sharded parameters: ``tx.init``
makes its moments with ``zeros_like(param)``, which keeps each parameter's sharding, whereas
under ``jit`` without ``out_shardings`` XLA may replicate the constant zeros (every device then
holds the full Adam state, defeating FSDP).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxrl_reason.parallel.sharding import (
    DEFAULT_RULES,
    Rules,
    logical_to_spec,
    param_shardings,
    shardings_of,
)

__all__ = [
    "batch_sharding",
    "batch_spec_for",
    "jit_sharded_update",
    "shard_model",
    "shard_train_state",
]


def batch_spec_for(
    mesh: Mesh, rules: Rules = DEFAULT_RULES, batch_size: int | None = None
) -> PartitionSpec:
    """``PartitionSpec`` of a ``[B, ...]`` batch leaf: rows over the ``batch`` rule's axes.

    Args:
      mesh: the device mesh (axes of size 1 are dropped from the spec).
      rules: logical -> mesh axis rules; ``batch`` maps to ``("data", "fsdp")`` by default.
      batch_size: when given, trailing mesh axes that do not divide it are dropped (down to
        replicated), as for parameters; leave ``None`` for training batches, which must divide.

    Returns:
      A one-entry spec (trailing dimensions are implicitly whole), valid for leaves of any rank.
    """
    shape = None if batch_size is None else (batch_size,)
    return logical_to_spec(("batch",), rules, mesh=mesh, shape=shape)


def batch_sharding(
    mesh: Mesh, rules: Rules = DEFAULT_RULES, batch_size: int | None = None
) -> NamedSharding:
    """``NamedSharding`` for every ``[B, ...]`` leaf of a batch (see :func:`batch_spec_for`).

    One sharding serves the whole batch dict as a pytree prefix of ``jax.jit``'s
    ``in_shardings``.
    """
    return NamedSharding(mesh, batch_spec_for(mesh, rules, batch_size))


def _fresh(x: Any) -> Any:
    # Donation refuses a buffer that appears twice in the donated arguments; optax states can
    # alias one array in several leaves (e.g. a shared step count). A copy keeps the sharding.
    return jnp.copy(x) if isinstance(x, jax.Array) else x


def shard_train_state(
    params: Any,
    value_head: Any,
    tx: Any,
    mesh: Mesh,
    rules: Rules = DEFAULT_RULES,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Places the RL train state on ``mesh`` and creates the optimiser state there.

    Args:
      params: ``nnx.State`` of the model's ``nnx.Param`` s (``nnx.split(model, nnx.Param,
        ...)[1]``) whose Variables carry logical names (``out_sharding`` metadata); on host or
        on any devices.
      value_head: the PPO value head ``{"w": f32[D], "b": f32[]}`` or ``None`` (GRPO). It is
        tiny and replicated.
      tx: the ``optax.GradientTransformation`` that will update ``(params, value_head)``
        (``train.optim.build_optimizer(...).tx``).
      mesh: the device mesh (:func:`jaxrl_reason.parallel.make_mesh`).
      rules: logical -> mesh axis rules.

    Returns:
      ``(state, shardings)``: ``state = {"params", "value_head", "opt_state"}`` with every leaf
      a ``jax.Array`` on ``mesh`` (the layout of ``Trainer.state``) and ``shardings`` the same
      tree of :class:`NamedSharding` (Variables hold shardings in ``params``). Adam moments
      follow their parameters (1/fsdp of the state per device under FSDP); step counts and the
      value head are replicated. Use ``shardings`` for :func:`jit_sharded_update`; to resume
      on another mesh pass a fresh ``state`` built on that mesh to
      ``Checkpointer.restore_latest`` as the target.

    Arrays already laid out as the rules say are not copied, so ``state["params"]`` may share
    buffers with ``params``: copy anything kept beside the train state (e.g. the KL reference
    weights, ``jax.tree.map(jnp.copy, state["params"])``) before the first donated update.
    """
    replicated = NamedSharding(mesh, PartitionSpec())
    p_sh = param_shardings(params, mesh, rules)
    params = jax.device_put(params, p_sh)
    vh_sh = None if value_head is None else jax.tree.map(lambda _: replicated, value_head)
    if value_head is not None:
        value_head = jax.device_put(value_head, vh_sh)
    # Eager on purpose (see the module docstring): moments inherit the param shardings.
    opt_state = jax.tree.map(_fresh, tx.init((params, value_head)))
    o_sh = shardings_of(opt_state, mesh)
    opt_state = jax.device_put(opt_state, o_sh)
    state = {"params": params, "value_head": value_head, "opt_state": opt_state}
    shardings = {"params": p_sh, "value_head": vh_sh, "opt_state": o_sh}
    return state, shardings


def jit_sharded_update(
    update_fn: Callable,
    mesh: Mesh,
    state_shardings: dict[str, Any],
    batch_sh: NamedSharding | None = None,
    *,
    donate: bool = True,
) -> Callable:
    """Compiles ``update(params, value_head, opt_state, batch)`` for ``mesh``.

    Args:
      update_fn: from ``train.step.make_update_fn`` (returns ``(params, value_head,
        opt_state, metrics)``).
      mesh: the device mesh.
      state_shardings: the ``shardings`` returned by :func:`shard_train_state`.
      batch_sh: sharding of every batch leaf (default :func:`batch_sharding`: rows over
        ``("data", "fsdp")``). Batches must already carry it
        (``parallel.global_batch(batch, mesh, batch_sh.spec)``); a host numpy batch is also
        accepted on one host and split on the way in.
      donate: donate the three state arguments (their buffers are reused for the outputs, so
        the train state exists once in device memory). The caller must not touch the old
        arrays after a call.

    Returns:
      The jitted function. The new state comes back with exactly ``state_shardings`` (so it can
      be fed straight back in, and checkpointed shard by shard); metrics are replicated scalars.
    """
    if batch_sh is None:
        batch_sh = batch_sharding(mesh)
    s = state_shardings
    replicated = NamedSharding(mesh, PartitionSpec())
    return jax.jit(
        update_fn,
        in_shardings=(s["params"], s["value_head"], s["opt_state"], batch_sh),
        out_shardings=(s["params"], s["value_head"], s["opt_state"], replicated),
        donate_argnums=(0, 1, 2) if donate else (),
    )


def shard_model(model: nnx.Module, mesh: Mesh, rules: Rules = DEFAULT_RULES) -> nnx.Module:
    """Shards an NNX model's variables in place from their logical names; returns it.

    Variables without names (and non-parameter state) are replicated on ``mesh``.
    """
    nnx.update(
        model, jax.device_put(nnx.state(model), param_shardings(nnx.state(model), mesh, rules))
    )
    return model
