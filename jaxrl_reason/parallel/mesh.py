"""Device meshes from config: axes ``("data", "fsdp", "tensor")``.

One :class:`jax.sharding.Mesh` serves the whole program (``docs/scaling.md``):

- ``data``: pure data parallelism (parameters replicated, batch split);
- ``fsdp``: fully-sharded data parallelism (batch split *and* parameters / optimiser state
  split along their ``embed`` dimension, gathered per layer by XLA);
- ``tensor``: tensor (model) parallelism over heads / MLP / vocabulary (Megatron style).

:func:`resolve_mesh_shape` is pure Python (no JAX import) so configs can be validated before
any backend starts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

MESH_AXES: tuple[str, str, str] = ("data", "fsdp", "tensor")


class MeshConfigError(ValueError):
    """A mesh shape that cannot be laid out on the available devices."""


def _get(mesh_cfg: Any, name: str) -> Any:
    if isinstance(mesh_cfg, Mapping):
        return mesh_cfg.get(name, 1)
    return getattr(mesh_cfg, name, 1)


def resolve_mesh_shape(mesh_cfg: Any, num_devices: int) -> tuple[int, int, int]:
    """Resolves ``mesh.{data,fsdp,tensor}`` to concrete sizes whose product is ``num_devices``.

    Args:
      mesh_cfg: a mapping or attribute object with optional integer fields ``data``, ``fsdp``,
        ``tensor`` (missing fields default to 1). At most one field may be ``-1``, meaning
        "all remaining devices".
      num_devices: the number of devices the mesh must cover (``jax.device_count()``).

    Returns:
      ``(data, fsdp, tensor)`` positive ints with ``data * fsdp * tensor == num_devices``.

    Raises:
      MeshConfigError: naming the field and the fix when a size is not a positive int or -1,
        when more than one is -1, or when the sizes do not multiply to ``num_devices``.
    """
    if num_devices < 1:
        raise MeshConfigError(f"num_devices must be >= 1, got {num_devices}")
    sizes = []
    for name in MESH_AXES:
        value = _get(mesh_cfg, name)
        if isinstance(value, bool) or not isinstance(value, int) or (value < 1 and value != -1):
            raise MeshConfigError(
                f"mesh.{name}={value!r}: must be a positive int or -1 (= the remaining devices)"
            )
        sizes.append(value)
    wildcards = [n for n, s in zip(MESH_AXES, sizes, strict=True) if s == -1]
    if len(wildcards) > 1:
        raise MeshConfigError(
            f"mesh: only one axis may be -1, got {', '.join('mesh.' + w for w in wildcards)}"
        )
    known = math.prod(s for s in sizes if s != -1)
    if wildcards:
        if num_devices % known:
            raise MeshConfigError(
                f"mesh.{wildcards[0]}=-1: the other axes multiply to {known}, which does not "
                f"divide the {num_devices} devices; choose sizes whose product divides "
                f"{num_devices}"
            )
        sizes = [num_devices // known if s == -1 else s for s in sizes]
    elif known != num_devices:
        shape = " * ".join(f"{n}={s}" for n, s in zip(MESH_AXES, sizes, strict=True))
        raise MeshConfigError(
            f"mesh: {shape} = {known} devices, but {num_devices} are available; make the sizes "
            f"multiply to {num_devices} or set one of them to -1"
        )
    return tuple(sizes)  # type: ignore[return-value]


def make_mesh(mesh_cfg: Any = None, devices: Sequence[Any] | None = None):
    """Builds the ``("data", "fsdp", "tensor")`` mesh described by ``mesh_cfg``.

    Args:
      mesh_cfg: mapping / ConfigDict with ``data``, ``fsdp``, ``tensor`` (see
        :func:`resolve_mesh_shape`); ``None`` means all devices on ``fsdp``.
      devices: devices to lay out (default ``jax.devices()``, i.e. every device of every
        process in a multi-host run).

    Returns:
      A :class:`jax.sharding.Mesh` with ``Auto`` axis types (sharding is propagated by XLA
      from the ``in_shardings`` / ``out_shardings`` we give ``jax.jit``). ``jax.make_mesh``
      orders devices so that the innermost axis (``tensor``) uses the fastest interconnect.
    """
    import jax
    from jax.sharding import AxisType

    if mesh_cfg is None:
        mesh_cfg = {"fsdp": -1}
    devices = list(jax.devices() if devices is None else devices)
    shape = resolve_mesh_shape(mesh_cfg, len(devices))
    return jax.make_mesh(
        shape, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES), devices=devices
    )
