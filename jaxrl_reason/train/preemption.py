"""Stop-on-signal for a training loop: a SIGTERM / SIGINT asks for a clean stop.

A preemptible VM (or a scheduler) sends SIGTERM some seconds before it kills the process; an
impatient user presses Ctrl-C. Either way the run should finish the current step, save a
checkpoint and exit. :class:`StopSignal` turns the *first* such signal into a flag the loop
reads at its step boundary; a *second* one means "now": SIGINT raises ``KeyboardInterrupt``
and SIGTERM exits with status ``128 + signum`` (143), as an unhandled signal would.

Usage::

    with StopSignal() as stop:
        for step in range(start, total + 1):
            state = train_step(state)
            if stop.poll() or step % save_every == 0:   # poll(): every process agrees
                ckpt.save(step, state, meta)
            if stop.requested:
                break

Handlers can only be installed from the main thread; elsewhere the context manager installs
nothing (:attr:`StopSignal.installed` is False) and the flag is only set by :meth:`request`.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Iterable
from typing import Any

__all__ = ["StopSignal"]

log = logging.getLogger(__name__)


class StopSignal:
    """Context manager: SIGTERM / SIGINT set :attr:`requested` instead of killing the process.

    Args:
      signals: the signals to catch (default SIGTERM and SIGINT).

    Attributes:
      requested: a stop was asked for (a signal, or :meth:`request`).
      signum: the first signal received (None when none, or only :meth:`request`).
      installed: whether handlers are installed (only in the main thread, inside ``with``).
    """

    def __init__(self, signals: Iterable[int] = (signal.SIGTERM, signal.SIGINT)):
        self.signals = tuple(signal.Signals(s) for s in signals)
        self._event = threading.Event()
        self.signum: int | None = None
        self.installed = False
        self._previous: dict[int, Any] = {}

    # -- state -------------------------------------------------------------------------------

    @property
    def requested(self) -> bool:
        """True once a signal (or :meth:`request`) asked for a stop; it stays True."""
        return self._event.is_set()

    @property
    def signal_name(self) -> str | None:
        """``"SIGTERM"`` / ``"SIGINT"`` for the first signal received, else None."""
        return None if self.signum is None else signal.Signals(self.signum).name

    def request(self) -> None:
        """Asks for a stop without a signal (tests, a time budget, a health check)."""
        self._event.set()

    def poll(self) -> bool:
        """:attr:`requested` on *any* process; a collective on multi-host runs.

        Hosts get SIGTERM at different moments: call this once per step on every process so
        that all of them save the same step and stop together. One process: no communication.
        """
        local = self.requested
        import jax

        if jax.process_count() > 1:
            import numpy as np
            from jax.experimental import multihost_utils

            flags = multihost_utils.process_allgather(np.asarray(local, np.int32))
            if np.any(flags):
                self._event.set()
            return bool(np.any(flags))
        return local

    # -- handlers ----------------------------------------------------------------------------

    def _handle(self, signum: int, frame) -> None:
        del frame
        name = signal.Signals(signum).name
        if self._event.is_set() and self.signum is not None:
            # Second signal: the user (or the scheduler) insists. Stop catching and go now.
            log.warning("%s received again: stopping immediately", name)
            self.uninstall()
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            sys.exit(128 + signum)
        self.signum = signum
        self._event.set()
        log.warning(
            "%s received: stopping after the current step (send it again to stop now)", name
        )

    def install(self) -> bool:
        """Installs the handlers (main thread only); returns whether it did."""
        if self.installed:
            return True
        if threading.current_thread() is not threading.main_thread():
            return False
        for sig in self.signals:
            self._previous[sig] = signal.getsignal(sig)
            signal.signal(sig, self._handle)
        self.installed = True
        return True

    def uninstall(self) -> None:
        """Puts back the handlers that were installed before :meth:`install`."""
        for sig, handler in self._previous.items():
            # None: a handler not installed from Python; the default is the closest match.
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
        self._previous.clear()
        self.installed = False

    def __enter__(self) -> StopSignal:
        self.install()
        return self

    def __exit__(self, *exc) -> None:
        self.uninstall()
