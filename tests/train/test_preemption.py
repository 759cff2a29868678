"""StopSignal: the first SIGTERM / SIGINT sets a flag, a second one stops now; handlers are
restored on exit and only installed from the main thread."""

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from jaxrl_reason.train.preemption import StopSignal

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _send(sig, stop=None):
    os.kill(os.getpid(), sig)
    deadline = time.monotonic() + 2.0  # the handler runs at the next bytecode boundary
    while stop is not None and not stop.requested and time.monotonic() < deadline:
        time.sleep(0.001)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_first_signal_sets_the_flag_and_handlers_are_restored(sig):
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    with StopSignal() as stop:
        assert stop.installed and not stop.requested and stop.signum is None
        _send(sig, stop)
        assert stop.requested and stop.signum == sig
        assert stop.signal_name == signal.Signals(sig).name
        assert stop.poll()  # one process: just the flag
    assert not stop.installed
    assert {s: signal.getsignal(s) for s in before} == before
    assert stop.requested  # the flag outlives the context


def test_second_sigterm_exits_with_128_plus_signum():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as e:
        with StopSignal() as stop:
            _send(signal.SIGTERM, stop)
            _send(signal.SIGTERM)
            time.sleep(1.0)  # the handler raises before this ends
    assert e.value.code == 128 + signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) == before


def test_second_sigint_raises_keyboard_interrupt():
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        with StopSignal() as stop:
            _send(signal.SIGINT, stop)
            assert stop.requested
            _send(signal.SIGINT)
            time.sleep(1.0)
    assert signal.getsignal(signal.SIGINT) == before


def test_request_without_a_signal_then_one_signal_is_still_a_first_signal():
    with StopSignal() as stop:
        stop.request()
        assert stop.requested and stop.signum is None
        _send(signal.SIGTERM)
        time.sleep(0.01)
        assert stop.signum == signal.SIGTERM  # flagged, not an exit


def test_only_installs_in_the_main_thread():
    before = signal.getsignal(signal.SIGTERM)
    seen = {}

    def worker():
        with StopSignal() as stop:
            seen["installed"] = stop.installed
            seen["handler"] = signal.getsignal(signal.SIGTERM)

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert seen == {"installed": False, "handler": before}


LOOP = textwrap.dedent(
    """
    import sys, time
    from jaxrl_reason.train.preemption import StopSignal
    step = 0
    with StopSignal() as stop:
        print("ready", flush=True)
        while not stop.requested:
            step += 1
            time.sleep(0.01)
        print("stopped", stop.signal_name, step, flush=True)
        if sys.argv[1] == "linger":
            time.sleep(60)  # a second signal must not wait for this
    """
)


@pytest.mark.parametrize("mode", ["once", "twice"])
def test_a_real_process_stops_cleanly_or_promptly(mode):
    env = dict(os.environ, PYTHONPATH=REPO)
    arg = "linger" if mode == "twice" else "exit"
    proc = subprocess.Popen(
        [sys.executable, "-c", LOOP, arg], stdout=subprocess.PIPE, text=True, env=env
    )
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    line = proc.stdout.readline().split()
    assert line[:2] == ["stopped", "SIGTERM"]
    if mode == "twice":
        proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)
    assert proc.returncode == (0 if mode == "once" else 128 + signal.SIGTERM)
