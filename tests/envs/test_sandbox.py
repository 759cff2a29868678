"""Hostile code in jaxrl_reason.envs.sandbox.run_python: each case contained, fast, no residue."""

from __future__ import annotations

import os
import time

import pytest

from jaxrl_reason.envs.sandbox import _MARKER, run_python, sandbox_capabilities

TIMEOUT = 2.0
SLACK = 1.5  # start-up + kill + reap, generous for a loaded 2-core machine


def _leftover_processes() -> list[int]:
    """Pids of live sandbox children (found by the bootstrap marker on the command line)."""
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                cmd = f.read()
            with open(f"/proc/{d}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if _MARKER.encode() in cmd and state != "Z":
            found.append(int(d))
    return found


def _run(code: str, **kw):
    t0 = time.monotonic()
    r = run_python(code, timeout_s=TIMEOUT, **kw)
    elapsed = time.monotonic() - t0
    assert elapsed < TIMEOUT + SLACK, (elapsed, r)
    assert not os.path.exists(r.workdir), r.workdir
    assert _leftover_processes() == []
    return r


def test_normal_code():
    r = _run("print(sum(range(10)))")
    assert r.ok and r.stdout == "45\n" and r.error == "" and r.returncode == 0


def test_stdlib_and_own_dir_files():
    code = (
        "import math, fractions, json\n"
        "open('f.txt', 'w').write('hi')\n"
        "print(math.comb(5, 2), fractions.Fraction(1, 3), json.dumps([open('f.txt').read()]))"
    )
    r = _run(code)
    assert r.ok, r.error
    assert r.stdout == '10 1/3 ["hi"]\n'


def test_exception_is_an_error_result():
    r = _run("x = 1\n1/0")
    assert not r.ok and "ZeroDivisionError" in r.error and "<code>" in r.error


def test_infinite_loop_times_out():
    r = _run("while True:\n    pass")
    assert not r.ok and r.timed_out and "timeout" in r.error


def test_sleep_times_out():
    r = _run("import time\ntime.sleep(60)")
    assert r.timed_out


def test_fork_bomb_contained():
    r = _run("import os\nwhile True:\n    os.fork()")
    assert not r.ok and ("fork" in r.error or r.timed_out)


@pytest.mark.skipif(
    os.geteuid() == 0 and sandbox_capabilities()["drop_to_uid"] < 0,
    reason="root child without a privilege drop: RLIMIT_NPROC does not bind",
)
def test_fork_blocked_by_nproc_without_audit_hook():
    # Bounded (200 tries, children exit at once) so a containment failure cannot bomb.
    code = (
        "import os\nn = 0\nfor _ in range(200):\n"
        "    try:\n        pid = os.fork()\n    except OSError:\n        continue\n"
        "    if pid == 0:\n        os._exit(0)\n    n += 1\nprint(n)"
    )
    r = _run(code, _audit_hook=False)
    assert r.ok and r.stdout == "0\n", r


def test_huge_allocation_fails():
    r = _run("x = bytearray(10 * 1024**3)\nprint(len(x))", memory_mb=256)
    assert not r.ok and ("MemoryError" in r.error or "killed" in r.error)


def test_write_outside_workdir_refused():
    target = "/tmp/pwned_xyz_jaxrl"
    if os.path.exists(target):
        os.remove(target)
    for code in (
        f"open({target!r}, 'w').write('pwned')",
        f"import os\nfd = os.open({target!r}, os.O_WRONLY | os.O_CREAT)\nos.write(fd, b'x')",
        f"import os\nos.rename('/etc/hostname', {target!r})",
    ):
        r = _run(code)
        assert not r.ok
        assert not os.path.exists(target)


def test_delete_outside_refused(tmp_path):
    sentinel = tmp_path / "sentinel.txt"
    sentinel.write_text("keep")
    os.chmod(tmp_path, 0o777)  # even a world-writable directory is protected
    for code in (
        f"import os\nos.remove({str(sentinel)!r})",
        f"import shutil\nshutil.rmtree({str(tmp_path)!r})",
        f"open({str(sentinel)!r}, 'w').write('gone')",
    ):
        r = _run(code)
        assert not r.ok
        assert sentinel.read_text() == "keep"


def test_socket_refused():
    for code in (
        "import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=1)",
        "import _socket\ns = _socket.socket()\ns.connect(('127.0.0.1', 22))",
    ):
        r = _run(code)
        assert not r.ok and r.error


def test_shell_refused():
    for code in (
        "import os\nos.system('touch /tmp/pwned_shell_jaxrl')",
        "import subprocess\nsubprocess.run(['touch', '/tmp/pwned_shell_jaxrl'])",
        "import os\nos.execv('/bin/sh', ['sh', '-c', 'touch /tmp/pwned_shell_jaxrl'])",
        "import os\nos.posix_spawn('/bin/touch', ['touch', '/tmp/pwned_shell_jaxrl'], {})",
        "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)",
    ):
        r = _run(code)
        assert not r.ok, code
        assert not os.path.exists("/tmp/pwned_shell_jaxrl")


def test_sys_exit_status():
    r = _run("import sys\nsys.exit(3)")
    assert not r.ok and r.returncode == 3 and "exit status 3" in r.error
    assert _run("import sys\nprint('x')\nsys.exit(0)").ok


def test_huge_output_truncated():
    r = _run(
        "import sys\nwhile True:\n    sys.stdout.write('a' * 1_000_000)", max_output_bytes=4096
    )
    assert not r.ok and r.truncated
    assert r.stdout.startswith("a" * 4096) and r.stdout.endswith("[output truncated]")
    assert len(r.stdout) < 4096 + 64


def test_print_100mb():
    r = _run("print('b' * 100_000_000)")
    assert r.truncated and len(r.stdout) < 70_000


def test_raise_limits_refused():
    r = _run("import resource\nresource.setrlimit(resource.RLIMIT_AS, (-1, -1))")
    assert not r.ok


def test_never_raises_on_bad_input():
    assert not run_python(None).ok  # type: ignore[arg-type]
    assert not run_python("x" * 300_000).ok
    assert not run_python("def (:").ok
