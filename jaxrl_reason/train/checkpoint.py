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

Restoring is defensive (:meth:`Checkpointer.restore_latest`): the newest step is checked (its
metadata files present and readable, its tree matching the target) and restored; a step that
fails is skipped with a one-line warning and the next older one is tried. A checkpoint whose
tree differs from the target (the trainable subset, the value head or the model changed) is
not a corruption: it raises :class:`CheckpointMismatchError`, whose one-line message names
the differing subtrees and the config fields that usually cause it.

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

import logging
import os
import signal
import threading
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import numpy as np

log = logging.getLogger(__name__)

#: Config fields whose change since a checkpoint was written usually explains a tree mismatch.
MISMATCH_HINT_FIELDS = (
    "optim.trainable",
    "optim.last_k",
    "algo.value_head",
    "implicit_prm.online",
    "model.name",
)

#: Files every committed step must have (relative to its step folder); a step missing one is
#: treated as corrupt and skipped by :meth:`Checkpointer.restore_latest`.
REQUIRED_STEP_FILES = ("_CHECKPOINT_METADATA", "state/_METADATA")


class CheckpointMismatchError(ValueError):
    """The checkpoint's state tree differs from the tree it is restored into.

    Attributes:
      step: the checkpoint step.
      only_in_checkpoint: subtree paths (``"value_head"``, ``"params.layers.11"``...) the
        checkpoint has and the target lacks.
      only_in_target: subtree paths the target has and the checkpoint lacks.
      shape_mismatches: ``(path, checkpoint_shape, target_shape)`` for leaves in both.
    """

    def __init__(self, message, *, step, only_in_checkpoint=(), only_in_target=(), shapes=()):
        super().__init__(message)
        self.step = step
        self.only_in_checkpoint = list(only_in_checkpoint)
        self.only_in_target = list(only_in_target)
        self.shape_mismatches = list(shapes)


class CheckpointRestoreError(RuntimeError):
    """No saved step could be restored (every one was corrupt); the message lists why."""


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


def _multiprocess() -> bool:
    return jax.process_count() > 1


def _replicated_everywhere() -> jax.sharding.NamedSharding:
    """Fully replicated over every device of every process."""
    mesh = jax.sharding.Mesh(np.asarray(jax.devices()), ("all",))
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())


def _host_local(sharding: Any) -> bool:
    """Whether a leaf has no layout Orbax can restore onto directly.

    No sharding at all, or (multi-host) a single-device sharding: such an array lives on one
    host only (e.g. a step counter or PRNG key made with ``jnp`` on each host).
    """
    if not isinstance(sharding, jax.sharding.Sharding):
        return True
    return _multiprocess() and isinstance(sharding, jax.sharding.SingleDeviceSharding)


def _default_sharding() -> jax.sharding.Sharding:
    # One process: the first local device. Several: replicated everywhere, then localised
    # after the restore (each process keeps its own copy, as it had before the save).
    if _multiprocess():
        return _replicated_everywhere()
    return jax.sharding.SingleDeviceSharding(jax.local_devices()[0])


def _abstract_leaf(x: Any) -> Any:
    """ShapeDtypeStruct (with sharding when known) for one leaf; key leaves -> key data."""
    sharding = getattr(x, "sharding", None)
    if _host_local(sharding):
        sharding = _default_sharding()
    if _is_prng_key(x):
        data = jax.eval_shape(jax.random.key_data, jax.ShapeDtypeStruct(x.shape, x.dtype))
        if isinstance(sharding, jax.sharding.NamedSharding):
            # The key data has trailing dims the key array does not: leave them whole.
            spec = tuple(sharding.spec) + (None,) * (data.ndim - len(tuple(sharding.spec)))
            sharding = jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec(*spec))
        elif not isinstance(sharding, jax.sharding.SingleDeviceSharding):
            sharding = _default_sharding()
        return jax.ShapeDtypeStruct(data.shape, data.dtype, sharding=sharding)
    return jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=sharding)


def _globalize(x: Any) -> Any:
    """Multi-host saving needs global arrays: a host-local jax.Array (same value on every
    host, e.g. the step) becomes a replicated global array."""
    if _multiprocess() and isinstance(x, jax.Array) and x.is_fully_addressable:
        host = np.asarray(x)
        return jax.make_array_from_callback(host.shape, _replicated_everywhere(), lambda i: host[i])
    return x


def _localize(x: Any) -> Any:
    """A replicated global array -> this process's copy on its first local device."""
    if _multiprocess() and isinstance(x, jax.Array) and not x.is_fully_addressable:
        return jax.device_put(x.addressable_data(0), jax.local_devices()[0])
    return x


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
      max_to_keep: how many recent checkpoints to keep (``None`` = all); must be >= 1 (the
        config's ``max_checkpoints``; 0 would delete every save).
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
        if max_to_keep is not None and (isinstance(max_to_keep, bool) or max_to_keep < 1):
            raise ValueError(
                f"max_checkpoints={max_to_keep!r}: must be >= 1 (how many recent checkpoints "
                "to keep; None keeps all)"
            )
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
        self._stopping = False
        self._signal_name: str | None = None
        self._previous_handlers: dict[int, Any] = {}
        #: ``(step, reason)`` of the steps the last :meth:`restore_latest` skipped as corrupt.
        self.skipped_steps: list[tuple[int, str]] = []
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
    def signal_received(self) -> bool:
        """This process got SIGTERM / SIGINT (or :meth:`request_stop`); not yet acted on."""
        return self._stop.is_set()

    def _poll_stop(self) -> bool:
        local = self._stop.is_set()
        if jax.process_count() > 1:
            # Hosts receive SIGTERM at different times; agree so all save the same step.
            from jax.experimental import multihost_utils

            flags = multihost_utils.process_allgather(np.asarray(local, np.int32))
            return bool(np.any(flags))
        return local

    @property
    def stop_requested(self) -> bool:
        """True once :meth:`maybe_save` has acted on a stop request (signal or
        :meth:`request_stop`, on any process): the state of that step is saved and the loop
        should exit. Latched at the step boundary, so a signal arriving between
        ``maybe_save`` and this check is handled (saved) at the next step, never skipped."""
        return self._stopping

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
                state=args.StandardSave(jax.tree.map(_globalize, keys_to_data(state))),
                meta=args.JsonSave(dict(metadata or {})),
            ),
            force=True,
        )

    def maybe_save(
        self, step: int, state: Any, metadata: Mapping[str, Any] | None = None, *, force=False
    ) -> bool:
        """Saves at a step boundary when periodic, forced, or a stop was requested.

        Call once per step on every process (it is a collective on multi-host runs). After it,
        :attr:`stop_requested` tells the loop whether to exit.
        """
        self._stopping = self._stopping or self._poll_stop()
        if force or self.should_save(step) or self._stopping:
            saved = self.save(step, state, metadata)
            if self._stopping:
                self.wait_until_finished()  # the process is about to exit
            return saved
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
        leaves, treedef = jax.tree.flatten(abstract_state)
        target = jax.tree.unflatten(treedef, [_abstract_leaf(x) for x in leaves])
        out = self._manager.restore(
            int(step),
            args=args.Composite(state=args.StandardRestore(target), meta=args.JsonRestore()),
        )
        restored = treedef.flatten_up_to(out["state"])
        restored = [
            _localize(r) if _host_local(getattr(a, "sharding", None)) else r
            for a, r in zip(leaves, restored, strict=True)
        ]
        state = _rewrap_keys(abstract_state, jax.tree.unflatten(treedef, restored))
        return Restored(int(step), state, dict(out["meta"] or {}))

    def restore_latest(self, abstract_state: Any) -> Restored | None:
        """Restores the newest checkpoint that restores; None when there is no checkpoint.

        Each step, newest first, is verified (:meth:`verify_step`: the metadata files present
        and readable, the saved tree equal to ``abstract_state``'s) and restored. A step that
        is corrupt (a missing metadata file, a truncated array file, ...) is skipped with a
        one-line warning naming the step and the reason, recorded in :attr:`skipped_steps`,
        and the next older step is tried.

        Raises:
          CheckpointMismatchError: a readable checkpoint whose tree differs from the target
            (a config change, not a corruption: an older step would differ the same way).
          CheckpointRestoreError: there are checkpoints but none restores.
        """
        self.wait_until_finished()
        self.skipped_steps = []
        steps = sorted(self.all_steps(), reverse=True)
        if not steps:
            return None
        for step in steps:
            try:
                self.verify_step(step, abstract_state)
                return self.restore(step, abstract_state)
            except CheckpointMismatchError:
                raise
            except Exception as e:  # noqa: BLE001 - any failure to read marks the step corrupt
                reason = _one_line(e)
                self.skipped_steps.append((step, reason))
                older = [s for s in steps if s < step]
                then = f"trying step {older[0]}" if older else "no older step left"
                log.warning(
                    "checkpoint step %d in %s skipped (%s); %s", step, self.directory, reason, then
                )
        listed = "; ".join(f"step {s}: {r}" for s, r in self.skipped_steps)
        raise CheckpointRestoreError(
            f"no checkpoint in {self.directory} restores ({listed}); move the directory away "
            "to start afresh, or restore one step explicitly with Checkpointer.restore"
        )

    def _step_path(self, step: int):
        from etils import epath

        return epath.Path(self.directory) / str(int(step))

    def saved_tree(self, step: int) -> dict[str, tuple[int, ...]]:
        """``{dotted leaf path: shape}`` of the state saved at ``step`` (from its metadata).

        Raises:
          FileNotFoundError: a required metadata file (:data:`REQUIRED_STEP_FILES`) is missing.
          ValueError: the metadata is unreadable.
        """
        folder = self._step_path(step)
        for name in REQUIRED_STEP_FILES:
            if not (folder / name).exists():
                raise FileNotFoundError(f"{name} missing in {folder}")
        # A standalone handler: the manager only knows its items' handlers after a save.
        meta = self._ocp.StandardCheckpointHandler().metadata(folder / "state")
        tree = getattr(meta, "tree", meta)
        if tree is None:
            raise ValueError(f"no readable state metadata in {folder}")
        return {
            _path_str(path): tuple(getattr(leaf, "shape", ()) or ())
            for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
        }

    def verify_step(self, step: int, abstract_state: Any) -> None:
        """Checks that ``step`` is complete and its tree matches ``abstract_state``.

        Raises:
          CheckpointMismatchError: the trees differ (see :func:`describe_tree_mismatch`).
          FileNotFoundError / ValueError: the step is incomplete or unreadable.
        """
        saved = self.saved_tree(step)
        target = {
            _path_str(path): tuple(np.shape(leaf))
            for path, leaf in jax.tree_util.tree_flatten_with_path(
                jax.tree.map(_abstract_leaf, abstract_state)
            )[0]
        }
        err = describe_tree_mismatch(saved, target, step=step, directory=self.directory)
        if err is not None:
            raise err

    def close(self) -> None:
        """Waits for pending writes, closes the manager and restores the signal handlers."""
        self._manager.wait_until_finished()
        self._manager.close()
        self.restore_signal_handlers()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _one_line(e: BaseException, limit: int = 200) -> str:
    """``"Type: first line of the message"``, cut at ``limit`` characters."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    text = f"{type(e).__name__}: {text}" if text else type(e).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _path_str(path) -> str:
    parts = []
    for k in path:
        for attr in ("key", "name", "idx"):
            if hasattr(k, attr):
                parts.append(str(getattr(k, attr)))
                break
        else:
            parts.append(str(k))
    return ".".join(parts)


def _subtree_roots(paths: set[str], others: set[str]) -> list[str]:
    """The shortest prefixes of ``paths`` that no path of ``others`` lies under."""
    other_prefixes = set()
    for p in others:
        parts = p.split(".")
        other_prefixes.update(".".join(parts[: i + 1]) for i in range(len(parts)))
    roots = set()
    for p in paths:
        parts = p.split(".")
        for i in range(len(parts)):
            prefix = ".".join(parts[: i + 1])
            if prefix not in other_prefixes:
                roots.add(prefix)
                break
    return sorted(roots, key=lambda r: (r.count("."), r))


def _first(items: list, n: int = 3) -> str:
    shown = ", ".join(str(x) for x in items[:n])
    return shown + (f" (+{len(items) - n} more)" if len(items) > n else "")


def describe_tree_mismatch(
    saved: Mapping[str, tuple[int, ...]],
    target: Mapping[str, tuple[int, ...]],
    *,
    step: int,
    directory: str = "",
) -> CheckpointMismatchError | None:
    """A one-line :class:`CheckpointMismatchError` when two ``{leaf path: shape}`` trees
    differ, else None.

    Differing subtrees are named by their roots (``value_head`` rather than each of its
    leaves), the first few of each kind; the message ends with the config fields that
    usually cause a mismatch (:data:`MISMATCH_HINT_FIELDS`).
    """
    only_saved = _subtree_roots(set(saved) - set(target), set(target))
    only_target = _subtree_roots(set(target) - set(saved), set(saved))
    shapes = [
        (p, saved[p], target[p]) for p in sorted(set(saved) & set(target)) if saved[p] != target[p]
    ]
    if not (only_saved or only_target or shapes):
        return None
    parts = []
    if only_saved:
        parts.append(f"in the checkpoint but not the target: {_first(only_saved)}")
    if only_target:
        parts.append(f"in the target but not the checkpoint: {_first(only_target)}")
    if shapes:
        shown = [f"{p} {tuple(a)} vs {tuple(b)}" for p, a, b in shapes]
        parts.append(f"shapes differ (checkpoint vs target): {_first(shown)}")
    where = f" in {directory}" if directory else ""
    msg = (
        f"checkpoint step {step}{where} does not match the state to restore: "
        + "; ".join(parts)
        + f". Usually a config change since it was saved: check {', '.join(MISMATCH_HINT_FIELDS)}"
        " (restore with the config it was saved with, or start a new workdir)"
    )
    return CheckpointMismatchError(
        msg, step=step, only_in_checkpoint=only_saved, only_in_target=only_target, shapes=shapes
    )
