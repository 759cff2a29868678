"""Logical axis names -> mesh axes, parameter sharding, and global batches.

Every parameter, activation and KV-cache dimension carries a *logical* name (``"embed"``,
``"heads"``, ...). A rule table maps each logical name to zero, one or several mesh axes; the
same model code then runs replicated, FSDP, tensor-parallel or any mix by changing the table or
the mesh (the t5x / MaxText / Levanter convention).

The functions here work on a generic pair of trees (arrays, logical names) so they do not
depend on which metadata key the model uses. :func:`logical_names` reads the names from Flax
NNX ``Variable`` metadata (``out_sharding``, or the older ``sharding_names`` / ``sharding``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MeshAxes = str | tuple[str, ...] | None
Rules = Sequence[tuple[str, MeshAxes]]

# Logical name -> mesh axes. FSDP shards the model dimension of every weight (each device holds
# 1/fsdp of parameters and Adam moments); tensor parallelism splits heads / MLP / vocabulary
# (Megatron-style column/row split); the batch is split over every data-like axis.
DEFAULT_RULES: tuple[tuple[str, MeshAxes], ...] = (
    ("batch", ("data", "fsdp")),
    ("layers", None),  # the scanned layer axis stays whole: each scan step needs one layer
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("mlp", "tensor"),
    ("seq", None),
)

# Metadata keys under which Flax NNX has stored logical names (0.12 uses ``out_sharding``).
_NNX_SHARDING_KEYS = ("out_sharding", "sharding_names", "sharding")


def _as_tuple(axes: MeshAxes) -> tuple[str, ...]:
    if axes is None:
        return ()
    if isinstance(axes, str):
        return (axes,)
    return tuple(axes)


def logical_to_spec(
    names: Sequence[str | None] | None,
    rules: Rules = DEFAULT_RULES,
    *,
    mesh: Mesh | None = None,
    shape: Sequence[int] | None = None,
) -> PartitionSpec:
    """Maps one array's logical dimension names to a :class:`PartitionSpec`.

    Args:
      names: one logical name (or ``None`` = replicated) per array dimension; ``None`` for the
        whole array means fully replicated.
      rules: ``(logical_name, mesh_axes)`` pairs; a name missing from the rules is replicated.
      mesh: when given, mesh axes of size 1 are dropped and, with ``shape``, the
        divisibility fallback applies.
      shape: the array's shape. A dimension whose size is not divisible by the product of its
        mesh axes drops trailing axes until it divides (possibly to fully replicated): e.g. a
        vocabulary of 49,152 over ``tensor=5`` stays whole instead of failing to compile.

    Returns:
      ``PartitionSpec`` with one entry per dimension. A mesh axis is used at most once per
      array (a later dimension that maps to an already used axis is replicated on it), as
      ``NamedSharding`` requires.

    Raises:
      ValueError: when ``shape`` and ``names`` disagree in length.
    """
    if names is None:
        return PartitionSpec()
    names = tuple(names)
    if shape is not None and len(shape) != len(names):
        raise ValueError(
            f"logical names {names} have {len(names)} entries but the array has shape "
            f"{tuple(shape)}; give one name (or None) per dimension"
        )
    table = {}
    for logical, axes in rules:
        table.setdefault(logical, _as_tuple(axes))  # first rule wins, as in flax
    used: set[str] = set()
    spec: list[MeshAxes] = []
    for dim, name in enumerate(names):
        axes = tuple(a for a in table.get(name, ()) if a not in used) if name else ()
        if mesh is not None:
            axes = tuple(a for a in axes if mesh.shape[a] > 1)
            if shape is not None:
                while axes and shape[dim] % math.prod(mesh.shape[a] for a in axes):
                    axes = axes[:-1]
        used.update(axes)
        spec.append(None if not axes else axes[0] if len(axes) == 1 else axes)
    return PartitionSpec(*spec)


def _is_names(x: Any) -> bool:
    return x is None or (isinstance(x, tuple) and all(n is None or isinstance(n, str) for n in x))


def shardings_for(arrays: Any, names: Any, mesh: Mesh, rules: Rules = DEFAULT_RULES) -> Any:
    """``NamedSharding`` tree for a tree of arrays and a matching tree of logical names.

    Args:
      arrays: pytree of arrays or ``jax.ShapeDtypeStruct`` (only ``.shape`` is read).
      names: same structure, each leaf a tuple of logical names (or ``None`` = replicated).
      mesh: the device mesh.
      rules: logical -> mesh axis rules.

    Returns:
      A pytree of :class:`NamedSharding` with the structure of ``arrays``.
    """
    leaves, treedef = jax.tree.flatten(arrays)
    name_leaves = treedef.flatten_up_to(names) if names is not None else [None] * len(leaves)
    out = []
    for arr, nm in zip(leaves, name_leaves, strict=True):
        if not _is_names(nm):
            raise TypeError(f"logical names must be a tuple of str/None or None, got {nm!r}")
        shape = np.shape(arr)
        if nm is not None and len(nm) != len(shape):
            raise ValueError(f"logical names {nm} do not match an array of shape {shape}")
        out.append(NamedSharding(mesh, logical_to_spec(nm, rules, mesh=mesh, shape=shape)))
    return jax.tree.unflatten(treedef, out)


def shard_arrays(arrays: Any, names: Any, mesh: Mesh, rules: Rules = DEFAULT_RULES) -> Any:
    """Places a tree of arrays on ``mesh`` according to their logical names.

    Returns the same tree with each leaf a ``jax.Array`` carrying its ``NamedSharding``.
    Works for host (numpy) arrays and for arrays already on devices (resharding).
    """
    return jax.device_put(arrays, shardings_for(arrays, names, mesh, rules))


def _is_variable(x: Any) -> bool:
    try:
        from flax import nnx
    except ImportError:  # pragma: no cover - flax is a hard dependency of the models
        return False
    return isinstance(x, nnx.Variable)


def _variable_names(v: Any) -> tuple[str | None, ...] | None:
    metadata = v.get_metadata()
    for key in _NNX_SHARDING_KEYS:
        names = metadata.get(key)
        if names:
            if isinstance(names, PartitionSpec):
                names = tuple(names)
            return tuple(names)
    return None


def split_logical(state: Any) -> tuple[Any, Any]:
    """Splits an NNX state into a plain array tree and a matching tree of logical names.

    Args:
      state: an ``nnx.State`` / pytree whose leaves are ``nnx.Variable`` (``nnx.state(model)``)
        or plain arrays.

    Returns:
      ``(arrays, names)``: the same container structure with every Variable replaced by its
      raw value (``arrays``) or by its logical names tuple, ``None`` when it has none
      (``names``). Feed both to :func:`shardings_for` / :func:`shard_arrays`.
    """
    leaves, treedef = jax.tree.flatten(state, is_leaf=_is_variable)
    values = [v.get_value() if _is_variable(v) else v for v in leaves]
    names = [_variable_names(v) if _is_variable(v) else None for v in leaves]
    return jax.tree.unflatten(treedef, values), jax.tree.unflatten(treedef, names)


def param_shardings(state: Any, mesh: Mesh, rules: Rules = DEFAULT_RULES) -> Any:
    """``NamedSharding`` tree (same structure as ``state``) from NNX logical-axis metadata."""
    leaves, treedef = jax.tree.flatten(state, is_leaf=_is_variable)
    out = []
    for v in leaves:
        if _is_variable(v):
            value = v.get_value()
            spec = logical_to_spec(_variable_names(v), rules, mesh=mesh, shape=np.shape(value))
            out.append(v.replace(NamedSharding(mesh, spec)))
        else:
            out.append(NamedSharding(mesh, PartitionSpec()))
    return jax.tree.unflatten(treedef, out)


def shard_params(state: Any, mesh: Mesh, rules: Rules = DEFAULT_RULES) -> Any:
    """Shards an NNX state (or any pytree of Variables / arrays) onto ``mesh``.

    Leaves without logical names are replicated. Use ``nnx.update(model, shard_params(
    nnx.state(model), mesh))`` to shard a model in place.
    """
    return jax.device_put(state, param_shardings(state, mesh, rules))


def abstract_with_shardings(tree: Any, shardings: Any) -> Any:
    """``jax.ShapeDtypeStruct`` tree carrying target shardings (for Orbax restore / AOT)."""
    return jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=s), tree, shardings
    )


def batch_spec(rules: Rules = DEFAULT_RULES, ndim: int = 2) -> PartitionSpec:
    """Spec of a ``[batch, ...]`` array: the batch over the rule's axes, the rest whole."""
    return logical_to_spec(("batch",) + (None,) * (ndim - 1), rules)


def global_batch(
    local_batch: Any, mesh: Mesh, spec: PartitionSpec | Mapping[str, Any] | None = None
) -> Any:
    """Assembles per-host batches into global ``jax.Array`` s split over the batch axes.

    Every process passes its own slice (leading dimension = global batch / process count);
    ``jax.make_array_from_process_local_data`` stitches them into one logical array without
    any cross-host copy. On one host this is a sharded ``device_put``.

    Args:
      local_batch: pytree of host arrays ``[B_local, ...]``.
      mesh: the device mesh.
      spec: a ``PartitionSpec`` for every leaf (default: leading dim over ``("data",
        "fsdp")``, the rest replicated), or a pytree of specs matching ``local_batch``.

    Returns:
      Pytree of global arrays ``[B_local * process_count, ...]``.
    """

    def put(x, s):
        x = np.asarray(x)
        if s is None:
            s = PartitionSpec(("data", "fsdp"), *([None] * (x.ndim - 1)))
        return jax.make_array_from_process_local_data(NamedSharding(mesh, s), x)

    if spec is None or isinstance(spec, PartitionSpec):
        return jax.tree.map(lambda x: put(x, spec), local_batch)
    leaves, treedef = jax.tree.flatten(local_batch)
    specs = treedef.flatten_up_to(spec)
    return jax.tree.unflatten(treedef, [put(x, s) for x, s in zip(leaves, specs, strict=True)])


def with_logical_constraint(
    x: jax.Array, names: Sequence[str | None], mesh: Mesh, rules: Rules = DEFAULT_RULES
) -> jax.Array:
    """Constrains an activation inside ``jit`` to the sharding its logical names imply."""
    spec = logical_to_spec(names, rules, mesh=mesh, shape=x.shape)
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))
