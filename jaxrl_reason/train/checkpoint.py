"""Orbax checkpoints of the whole run state, with save-on-signal and resharding restore.

A checkpoint holds two items (``orbax.checkpoint.args.Composite``):

- ``state``: an arbitrary pytree of ``jax.Array`` (params, optimiser state, step, PRNG key...)
  saved with ``StandardSave`` -- every process writes its own shards (multi-host safe);
- ``meta``: a JSON dict (data-iterator position, reward-tracker state, ...) via ``JsonSave``.

Typed PRNG keys (``jax.random.key``) cannot be serialised directly; they are stored as their
``jax.random.key_data`` and re-wrapped on restore from the abstract state's key type.

Restoring takes an *abstract* state (``jax.ShapeDtypeStruct`` leaves with a ``sharding``, or
concrete arrays whose shardings are reused): Orbax reads each shard straight onto the target
devices, so a checkpoint saved on one mesh restores onto another (resharding).

Usage in a loop::

    ckpt = Checkpointer(workdir + "/checkpoints", save_every=config.checkpoint_every)
    restored = ckpt.restore_latest(abstract_state) if resume else None
    ...
    for step in range(start, total_steps + 1):
        state = train_step(state, batch)
        ckpt.maybe_save(step, state, meta)   # every k steps, or now if SIGTERM / Ctrl-C came
        if ckpt.stop_requested:
            break                            # the save above already happened
    ckpt.close()
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import numpy as np


class Restored(NamedTuple):
    """Result of a restore: the step, the state pytree and the JSON metadata."""

    step: int
    state: Any
    metadata: dict


def _is_prng_key(x: Any) -> bool:
    dtype = getattr(x, "dtype", None)
    return dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


def keys_to_data(tree: Any) -> Any:
    """Replaces typed PRNG-key leaves by their raw ``uint32`` key data (serialisable)."""
    return jax.tree.map(lambda x: jax.random.key_data(x) if _is_prng_key(x) else x, tree)


def _abstract_leaf(x: Any) -> Any:
    """ShapeDtypeStruct (with sharding when known) for one leaf; key leaves -> key data."""
    sharding = getattr(x, "sharding", None)
    if _is_prng_key(x):
        data = jax.eval_shape(jax.random.key_data, jax.ShapeDtypeStruct(x.shape, x.dtype))
        if isinstance(sharding, jax.sharding.NamedSharding):
            extra = (None,) * (data.ndim - len(x.shape))
            sharding = jax.sharding.NamedSharding(
                sharding.mesh,
                jax.sharding.PartitionSpec(
                    *sharding.spec, *((None,) * (len(x.shape) - len(sharding.spec))), *extra
                ),
            )
        elif sharding is not None and not isinstance(sharding, jax.sharding.SingleDeviceSharding):
            sharding = None
        return jax.ShapeDtypeStruct(data.shape, data.dtype, sharding=sharding)
    if isinstance(sharding, jax.sharding.Sharding):
        return jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=sharding)
    # No sharding given: restore replicated onto the first device (single-process default).
    dev = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    return jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=dev)


def _key_impl(abstract_key: Any) -> Any:
    """The PRNG implementation of a key array or of a key-typed ShapeDtypeStruct."""
    if isinstance(abstract_key, jax.Array):
        return jax.random.key_impl(abstract_key)
    # A key dtype (``key<fry>``) carries its implementation; None falls back to the default.
    return getattr(abstract_key.dtype, "_impl", None)


def _rewrap_keys(abstract: Any, restored: Any) -> Any:
    """Turns restored key data back into typed keys where the abstract state had keys."""

    def wrap(a, r):
        return jax.random.wrap_key_data(r, impl=_key_impl(a)) if _is_prng_key(a) else r

    return jax.tree.map(wrap, abstract, restored)


class Checkpointer:
    """Orbax ``CheckpointManager`` with a save interval, signal handling and resharding restore.

    Args:
      directory: where step folders are written (local path or ``gs://...``; on a multi-host
        run every host must see the same directory).
      save_every: save when ``step % save_every == 0`` (0 disables periodic saves).
      max_to_keep: how many recent checkpoints to keep (``None`` = all).
      async_save: let Orbax write in a background thread (the device-to-host copy still
        happens before :meth:`save` returns, so donating the state afterwards is safe).
      handle_signals: install SIGTERM / SIGINT handlers that request a save at the next step
        boundary (a second Ctrl-C interrupts immediately).
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        *,
        save_every: int,
        max_to_keep: int | None = 3,
        async_save: bool = True,
        handle_signals: bool = True,
    ):
        import orbax.checkpoint as ocp

        directory = os.fspath(directory)
        if "://" not in directory:
            directory = os.path.abspath(directory)
        if save_every < 0:
            raise ValueError(f"checkpoint_every={save_every}: must be >= 0 (0 = only on demand)")
        self.directory = directory
        self.save_every = save_every
        self._ocp = ocp
        self._manager = ocp.CheckpointManager(
            directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=max_to_keep,
                enable_async_checkpointing=async_save,
                create=True,
            ),
        )
        self._stop = threading.Event()
        self._signal_name: str | None = None
        self._previous_handlers: dict[int, Any] = {}
        if handle_signals:
            self.install_signal_handlers()

    # -- signals -----------------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        """SIGTERM / SIGINT set :attr:`stop_requested`; the loop saves and exits at the next
        step boundary. A second SIGINT restores the default handler's behaviour (raise)."""
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be installed from the main thread
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous_handlers[sig] = signal.getsignal(sig)
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum, frame) -> None:
        if self._stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt  # impatient second Ctrl-C
        self._signal_name = signal.Signals(signum).name
        self._stop.set()

    def request_stop(self) -> None:
        """Asks for a save at the next :meth:`maybe_save` and then a clean stop."""
        self._stop.set()

    @property
    def stop_requested(self) -> bool:
        """True once a stop (signal or :meth:`request_stop`) was asked for, on any process."""
        local = self._stop.is_set()
        if jax.process_count() > 1:
            # Hosts receive SIGTERM at different times; agree so all save the same step.
            from jax.experimental import multihost_utils

            flags = multihost_utils.process_allgather(np.asarray(local, np.int32))
            return bool(np.any(flags))
        return local

    def restore_signal_handlers(self) -> None:
        for sig, handler in self._previous_handlers.items():
            signal.signal(sig, handler)
        self._previous_handlers.clear()

    # -- saving ------------------------------------------------------------------------------

    def should_save(self, step: int) -> bool:
        """Periodic rule: ``save_every > 0 and step % save_every == 0``."""
        return self.save_every > 0 and step % self.save_every == 0

    def save(self, step: int, state: Any, metadata: Mapping[str, Any] | None = None) -> bool:
        """Saves ``state`` (pytree of arrays) and JSON ``metadata`` at ``step`` now.

        Returns False (and writes nothing) when ``step`` is already saved.
        """
        if step in self._manager.all_steps():
            return False
        args = self._ocp.args
        return self._manager.save(
            int(step),
            args=args.Composite(
                state=args.StandardSave(keys_to_data(state)),
                meta=args.JsonSave(dict(metadata or {})),
            ),
            force=True,
        )

    def maybe_save(
        self, step: int, state: Any, metadata: Mapping[str, Any] | None = None, *, force=False
    ) -> bool:
        """Saves at a step boundary when periodic, forced, or a stop was requested."""
        if force or self.should_save(step) or self.stop_requested:
            return self.save(step, state, metadata)
        return False

    def wait_until_finished(self) -> None:
        """Blocks until background (async) writes are committed."""
        self._manager.wait_until_finished()

    # -- restoring ---------------------------------------------------------------------------

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def restore(self, step: int, abstract_state: Any) -> Restored:
        """Restores ``step`` onto the shapes / dtypes / shardings of ``abstract_state``.

        Args:
          step: a saved step.
          abstract_state: pytree like the saved one; leaves are ``jax.ShapeDtypeStruct`` with
            ``sharding`` (the target layout, possibly a different mesh) or concrete arrays
            (their shardings are reused). Typed PRNG-key leaves are restored as keys.

        Returns:
          :class:`Restored` ``(step, state, metadata)``.
        """
        self.wait_until_finished()
        args = self._ocp.args
        target = jax.tree.map(_abstract_leaf, abstract_state)
        out = self._manager.restore(
            int(step),
            args=args.Composite(state=args.StandardRestore(target), meta=args.JsonRestore()),
        )
        state = _rewrap_keys(abstract_state, out["state"])
        return Restored(int(step), state, dict(out["meta"] or {}))

    def restore_latest(self, abstract_state: Any) -> Restored | None:
        """Restores the newest checkpoint, or returns None when there is none."""
        self.wait_until_finished()
        step = self.latest_step()
        if step is None:
            return None
        return self.restore(step, abstract_state)

    def close(self) -> None:
        """Waits for pending writes, closes the manager and restores the signal handlers."""
        self._manager.wait_until_finished()
        self._manager.close()
        self.restore_signal_handlers()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
