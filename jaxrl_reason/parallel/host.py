"""Moving arrays between the host and a (possibly multi-host) mesh: the only two doors.

JAX on several processes ("multi-controller") runs one Python program per host; a
``jax.Array`` whose sharding spans devices of other hosts is *global*, and a host can read only
its own shards. ``np.asarray`` / ``jax.device_get`` / ``float()`` refuse such an array unless it
is fully replicated, and ``jax.device_put`` of a committed host-local array onto a global
sharding is refused. Every host transfer in the training loop therefore goes through:

- :func:`to_host` (device -> host): ``np.asarray`` when the array is fully addressable (one
  process: always, so the single-process path is unchanged) or fully replicated; otherwise
  ``multihost_utils.process_allgather`` (a collective: *every* process must call it, in the
  same order).
- :func:`to_global` (host -> device): a host value that is the same on every process (the loop
  computes the whole host-side batch on every host, from the same data position and PRNG
  key) becomes a global array; each process builds only its own shards
  (``jax.make_array_from_callback``), without a cross-host copy or check.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Sharding

__all__ = ["host_tree", "to_global", "to_host"]


def _is_key(x: Any) -> bool:
    return isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def to_host(x: Any) -> Any:
    """A host copy of ``x`` (any shape and dtype; typed PRNG keys are returned as they are).

    Args:
      x: a ``jax.Array`` (local or global), a numpy array, a Python scalar or ``None``.

    Returns:
      ``np.ndarray`` with ``x``'s full (global) shape and dtype; ``None`` and non-array Python
      values pass through. For an array that spans other processes this is a collective
      (``process_allgather``): call it on every process, in the same order.
    """
    if x is None or _is_key(x):
        return x
    if isinstance(x, jax.Array) and not (x.is_fully_addressable or x.is_fully_replicated):
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)


def host_tree(tree: Any) -> Any:
    """:func:`to_host` on every leaf of a pytree (what ``jax.device_get`` does on one host)."""
    return jax.tree.map(to_host, tree)


def to_global(x: Any, sharding: Sharding) -> jax.Array:
    """Places a host value that is *identical on every process* onto ``sharding``.

    Args:
      x: a numpy array, a host-local ``jax.Array`` (typed PRNG keys included) or a global
        ``jax.Array`` (then resharded by ``jax.device_put``).
      sharding: the target, e.g. a ``NamedSharding`` over a mesh spanning several hosts.

    Returns:
      A ``jax.Array`` of ``x``'s shape and dtype with ``sharding``. On one process (a fully
      addressable ``sharding``) this is ``jax.device_put(x, sharding)``. Across processes each
      builds only the shards its devices hold, from its own copy of ``x``; a value that
      differs between processes yields an array whose shards disagree, so callers must derive
      ``x`` from replicated state only (the step's data position, seed and step index).
    """
    if sharding.is_fully_addressable or (isinstance(x, jax.Array) and not x.is_fully_addressable):
        return jax.device_put(x, sharding)
    if _is_key(x):
        data = to_global(jax.random.key_data(x), sharding)
        return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])
