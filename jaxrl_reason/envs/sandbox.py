"""Run untrusted, model-written Python in a contained child process.

:func:`run_python` is the code-interpreter tool of tool-integrated reasoning (ARTIST, arXiv
2505.01441; ToRL, arXiv 2503.23383): the model writes ``<python>...</python>``, the
environment runs the code and shows its stdout. The code is hostile by assumption (an RL
policy explores), so every call gets its own process and the call returns, never raises,
within ``timeout_s`` plus a small constant, whatever the code does.

Containment, outermost first (each layer is independent of the ones after it):

1. **A separate process in its own session** (``start_new_session=True``) started with
   ``shell=False`` as ``sys.executable -I -S -c BOOTSTRAP`` (isolated mode: no ``PYTHON*``
   variables, no user site, no ``site`` import, so no site-packages on ``sys.path``) with a
   minimal environment. The code goes in through stdin, never through argv or a shell. On
   timeout, on too much output and always at the end, the whole process group is sent
   ``SIGKILL`` (``os.killpg``); the direct child is reaped.
2. **No network namespace** when ``unshare -n`` works on the host (root, or unprivileged user
   namespaces via ``unshare -r -n``): the child sees no network interface but a down
   loopback. Probed once per process; see :func:`sandbox_capabilities`.
3. **Resource limits** set by the bootstrap inside the child before any user code runs
   (rather than ``preexec_fn``, which is unsafe in a multi-threaded parent such as a JAX
   trainer): ``RLIMIT_AS`` = ``memory_mb``, ``RLIMIT_CPU`` = ``ceil(timeout_s)`` (a second
   later the hard limit kills), ``RLIMIT_FSIZE`` = ``max_file_mb``, ``RLIMIT_NOFILE`` = 64,
   ``RLIMIT_CORE`` = 0 and ``RLIMIT_NPROC`` = 0 (no ``fork`` / thread creation at all).
4. **Dropped privileges** when the parent is root: the bootstrap switches to ``nobody``
   (``setgroups([])``, ``setgid``, ``setuid``) after the limits, so ``RLIMIT_NPROC`` applies
   (root bypasses it), the limits cannot be raised again, root-owned files cannot be
   written or deleted and no root process can be signalled. The working directory is a
   fresh ``tempfile.mkdtemp`` directory (chowned to ``nobody``) that is removed afterwards.
   Standard-library modules in :data:`PRELOAD_MODULES` are imported before the drop, since
   the interpreter's files may not be readable by ``nobody``.
5. **An audit hook** (PEP 578) installed before user code: it refuses sockets, process
   creation (``os.fork``, ``os.system``, ``os.exec*``, ``os.posix_spawn``, ``os.spawn*``,
   ``subprocess.Popen``, importing ``_posixsubprocess`` / ``_socket`` / ``_ctypes``),
   ``ctypes``, signalling other processes, raising resource limits, ``gc`` object walks,
   patching function code, and any write / create / delete / rename / chmod / link outside
   the working directory. Audit hooks are not a security boundary on their own (CPython's
   docs say so); here they back up layers 1-4 and are what contains a root child on hosts
   where dropping privileges is impossible.

Output: stdout is read in chunks as it arrives and kept up to ``max_output_bytes``; the
first byte beyond that kills the process (``stdout`` keeps the head plus a truncation
marker), so printing 100 MB never buffers 100 MB in the parent.

Residual risks: the child can read world-readable files, and can fill the disk with many
files below ``max_file_mb`` each (inside its directory) until the timeout.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import pwd
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time

__all__ = ["PRELOAD_MODULES", "SandboxResult", "run_python", "sandbox_capabilities"]

#: Standard-library modules imported by the child before privileges are dropped (the code can
#: ``import`` them even where the interpreter's files are unreadable to ``nobody``).
PRELOAD_MODULES = (
    "math",
    "cmath",
    "fractions",
    "decimal",
    "statistics",
    "random",
    "itertools",
    "functools",
    "operator",
    "collections",
    "heapq",
    "bisect",
    "string",
    "re",
    "json",
    "datetime",
    "textwrap",
    "dataclasses",
    "typing",
)

#: Marker on the child's command line (tests look for leftover processes by it).
_MARKER = "# jaxrl_reason.envs.sandbox bootstrap"
_TRUNC_MARK = "\n...[output truncated]"
_MAX_CODE_BYTES = 256 * 1024
_STDERR_KEEP = 16 * 1024

# The child's bootstrap. argv: mem_bytes cpu_s fsize_bytes uid gid preload(comma list) hook(1/0).
_BOOTSTRAP = (
    _MARKER
    + r"""
import os, sys, resource
_code = sys.stdin.buffer.read().decode("utf-8", "replace")
_mem, _cpu, _fsize, _uid, _gid = (int(x) for x in sys.argv[1:6])
for _m in sys.argv[6].split(","):
    if _m:
        try:
            __import__(_m)
        except Exception:
            pass
import traceback
_lims = [(resource.RLIMIT_AS, _mem), (resource.RLIMIT_FSIZE, _fsize),
         (resource.RLIMIT_NOFILE, 64), (resource.RLIMIT_CORE, 0), (resource.RLIMIT_NPROC, 0)]
for _r, _v in _lims:
    try:
        resource.setrlimit(_r, (_v, _v))
    except (ValueError, OSError):
        pass
try:
    resource.setrlimit(resource.RLIMIT_CPU, (_cpu, _cpu + 1))
except (ValueError, OSError):
    pass
if _uid >= 0 and os.geteuid() == 0:
    try:
        os.setgroups([])
        os.setgid(_gid)
        os.setuid(_uid)
    except OSError:
        pass


def _make_hook(root=os.path.realpath(os.getcwd())):
    deny = frozenset((
        "os.system", "os.exec", "os.spawn", "os.posix_spawn", "os.fork", "os.forkpty",
        "os.kill", "os.killpg", "os.startfile", "subprocess.Popen", "pty.spawn",
        "resource.setrlimit", "resource.prlimit", "signal.pthread_kill",
        "gc.get_objects", "gc.get_referrers", "gc.get_referents", "sys._current_frames",
        "os.link", "os.symlink", "os.chroot", "os.setxattr", "os.removexattr",
    ))
    deny_prefix = ("socket.", "ctypes.", "_ctypes.", "mmap.", "winreg.", "_winapi.")
    deny_import = frozenset(("_posixsubprocess", "_socket", "_ctypes", "_posixshmem",
                              "_multiprocessing", "fcntl", "termios", "pty"))
    path_events = frozenset(("os.remove", "os.rmdir", "os.mkdir", "os.rename", "os.chmod",
                             "os.chown", "os.truncate", "os.utime", "os.chflags",
                             "os.lchflags", "os.lchmod", "shutil.rmtree", "shutil.move",
                             "shutil.copyfile", "shutil.copytree", "shutil.chown",
                             "os.mkfifo", "os.mknod"))
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
    guarded = frozenset(("__code__", "__defaults__", "__kwdefaults__", "__closure__",
                         "__globals__"))
    realpath, fspath, sep = os.path.realpath, os.fsdecode, os.sep

    def inside(p):
        if isinstance(p, int):
            return True
        try:
            p = realpath(fspath(p))
        except Exception:
            return False
        return p == root or p.startswith(root + sep)

    def hook(event, args):
        if event in deny or event.startswith(deny_prefix):
            raise PermissionError("sandbox: " + event + " is not allowed")
        if event == "import":
            if args and str(args[0]).split(".")[0] in deny_import:
                raise PermissionError("sandbox: import " + str(args[0]) + " is not allowed")
        elif event == "open":
            mode = args[1] if len(args) > 1 else None
            flags = args[2] if len(args) > 2 else 0
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & write_flags)
            if writing and not inside(args[0]):
                raise PermissionError("sandbox: writing outside the working directory")
        elif event in path_events:
            for a in args[:2]:
                if isinstance(a, (str, bytes, os.PathLike)) and not inside(a):
                    raise PermissionError("sandbox: " + event + " outside the working directory")
        elif event in ("object.__setattr__", "object.__delattr__", "object.__getattr__"):
            if len(args) > 1 and args[1] in guarded and event != "object.__getattr__":
                raise PermissionError("sandbox: setting " + str(args[1]) + " is not allowed")
            if event == "object.__getattr__" and args[0] is hook:
                raise PermissionError("sandbox: inspecting the audit hook is not allowed")

    return hook


if sys.argv[7] == "1":
    sys.addaudithook(_make_hook())
del _make_hook, _lims, _r, _v
_g = {"__name__": "__main__", "__builtins__": __builtins__}
try:
    exec(compile(_code, "<code>", "exec"), _g)
except SystemExit:
    raise
except BaseException as _e:
    _tb = _e.__traceback__
    while _tb is not None and _tb.tb_frame.f_code.co_filename != "<code>":
        _tb = _tb.tb_next
    try:
        traceback.print_exception(type(_e), _e, _tb, limit=-8)
    except BaseException:
        sys.stderr.write(type(_e).__name__ + "\n")
    sys.stderr.flush()
    sys.exit(1)
"""
)


@dataclasses.dataclass(frozen=True)
class SandboxResult:
    """The outcome of one :func:`run_python` call.

    Attributes:
      ok: True when the code ran to completion with exit status 0 within the limits.
      stdout: what the code printed (UTF-8, undecodable bytes replaced), at most
        ``max_output_bytes`` bytes plus ``"\\n...[output truncated]"`` when it printed more.
      error: ``""`` when ``ok``; else a one-to-few-line reason: the tail of the traceback
        (``"ZeroDivisionError: division by zero"``), ``"timeout: ..."``,
        ``"output limit exceeded: ..."``, ``"killed by signal SIGKILL"``, ``"exit status 3"``.
      returncode: the child's exit status (negative: killed by that signal); None if it
        never started.
      timed_out: the wall-clock limit killed it.
      truncated: the output cap killed it.
      elapsed_s: wall-clock seconds of the call.
      workdir: the (already removed) temporary working directory the code ran in.
    """

    ok: bool
    stdout: str
    error: str
    returncode: int | None = None
    timed_out: bool = False
    truncated: bool = False
    elapsed_s: float = 0.0
    workdir: str = ""


@functools.lru_cache(maxsize=1)
def _unshare_prefix() -> tuple[str, ...]:
    exe = shutil.which("unshare")
    if exe is None:
        return ()
    for flags in (("-n",), ("-r", "-n")):
        try:
            r = subprocess.run(
                [exe, *flags, "--", "true"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=5,
                check=False,
            )
        except (OSError, subprocess.SubprocessError):
            continue
        if r.returncode == 0:
            return (exe, *flags, "--")
    return ()


@functools.lru_cache(maxsize=1)
def _drop_ids() -> tuple[int, int]:
    if os.geteuid() != 0:
        return (-1, -1)
    try:
        pw = pwd.getpwnam("nobody")
    except KeyError:
        return (-1, -1)
    return (pw.pw_uid, pw.pw_gid)


def sandbox_capabilities() -> dict[str, object]:
    """What :func:`run_python` can use on this host (probed once, cached).

    Returns:
      ``{"network_namespace": bool, "unshare": tuple argv prefix, "drop_to_uid": int (-1:
      none, the child keeps the parent's uid), "audit_hook": True}``.
    """
    uid, _ = _drop_ids()
    prefix = _unshare_prefix()
    return {
        "network_namespace": bool(prefix),
        "unshare": prefix,
        "drop_to_uid": uid,
        "audit_hook": True,
    }


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _exited(pid: int) -> bool:
    """True once ``pid`` has exited (without reaping it, so its process group id stays
    reserved for :func:`_kill_group`)."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT | os.WNOHANG) is not None
    except ChildProcessError:
        return True


def _error_text(stderr: bytes, returncode: int) -> str:
    text = stderr.decode("utf-8", "replace").strip()
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        hint = {"SIGXCPU": " (CPU time limit)", "SIGKILL": " (CPU time or memory limit)"}
        return f"killed by {name}{hint.get(name, '')}" + (f"\n{text[-1000:]}" if text else "")
    if text:
        lines = text.splitlines()
        return "\n".join(lines[-6:])[-2000:]
    return f"exit status {returncode}"


def run_python(
    code: str,
    *,
    timeout_s: float = 5.0,
    memory_mb: int = 512,
    max_output_bytes: int = 64 * 1024,
    max_file_mb: int = 16,
    _audit_hook: bool = True,
) -> SandboxResult:
    """Runs ``code`` as a Python script in a contained child process; never raises.

    Args:
      code: Python source (the body of a model's ``<python>`` block). Passed via stdin.
      timeout_s: wall-clock limit for the whole call, interpreter start-up included (also
        the CPU-time limit, rounded up).
      memory_mb: address-space limit of the child (``RLIMIT_AS``); a larger allocation is a
        ``MemoryError`` in the child, i.e. an error result.
      max_output_bytes: stdout bytes kept; printing more kills the child.
      max_file_mb: largest file the child may write (``RLIMIT_FSIZE``).
      _audit_hook: tests only: False leaves out layer 5 to check the OS-level layers alone.

    Returns:
      :class:`SandboxResult`; ``ok`` only for a clean exit with status 0. Returns within
      ``timeout_s`` plus about 0.1 s (process start and kill), plus the one-time probe of
      ``unshare`` on the first call.

    Example::

        run_python("print(sum(range(10)))")  # SandboxResult(ok=True, stdout='45\\n', ...)
    """
    t0 = time.monotonic()
    if not isinstance(code, str):
        return SandboxResult(False, "", f"code must be a str, got {type(code).__name__}")
    data = code.encode("utf-8", "replace")
    if len(data) > _MAX_CODE_BYTES:
        return SandboxResult(False, "", f"code too long ({len(data)} > {_MAX_CODE_BYTES} bytes)")
    prefix = _unshare_prefix()
    uid, gid = _drop_ids()
    workdir = tempfile.mkdtemp(prefix="jaxrl_sandbox_")
    proc = None
    out = bytearray()
    err = bytearray()
    timed_out = truncated = False
    try:
        if uid >= 0:
            os.chown(workdir, uid, gid)
        argv = [
            *prefix,
            sys.executable,
            "-I",
            "-S",
            "-c",
            _BOOTSTRAP,
            str(max(memory_mb, 64) << 20),
            str(max(1, math.ceil(timeout_s))),
            str(max(max_file_mb, 0) << 20),
            str(uid),
            str(gid),
            ",".join(PRELOAD_MODULES),
            "1" if _audit_hook else "0",
        ]
        env = {
            "PATH": "/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "HOME": workdir,
            "TMPDIR": workdir,
        }
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=workdir,
                env=env,
                shell=False,
                close_fds=True,
                start_new_session=True,
            )
        except OSError as e:
            return SandboxResult(False, "", f"could not start the interpreter: {e}")
        deadline = t0 + timeout_s
        pending = memoryview(data)
        sel = selectors.DefaultSelector()
        os.set_blocking(proc.stdin.fileno(), False)
        if pending:
            sel.register(proc.stdin, selectors.EVENT_WRITE)
        else:
            proc.stdin.close()
        sel.register(proc.stdout, selectors.EVENT_READ)
        sel.register(proc.stderr, selectors.EVENT_READ)
        readers = 2
        while readers:
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            for key, _ in sel.select(timeout=left):
                f = key.fileobj
                if f is proc.stdin:
                    try:
                        n = os.write(f.fileno(), pending[:65536])
                        pending = pending[n:]
                    except BlockingIOError:
                        continue
                    except OSError:  # the child closed stdin / died
                        pending = pending[:0]
                    if not pending:
                        sel.unregister(f)
                        f.close()
                    continue
                chunk = os.read(f.fileno(), 65536)
                if not chunk:
                    sel.unregister(f)
                    readers -= 1
                    continue
                if f is proc.stdout:
                    room = max_output_bytes - len(out)
                    out += chunk[: max(room, 0)]
                    if len(chunk) > room:
                        truncated = True
                elif len(err) < _STDERR_KEEP:
                    err += chunk[: _STDERR_KEEP - len(err)]
            if truncated:
                break
        sel.close()
        if not (timed_out or truncated):
            # Pipes closed: the child is exiting; wait for it, up to the deadline.
            while not _exited(proc.pid):
                if time.monotonic() >= deadline:
                    timed_out = True
                    break
                time.sleep(0.002)
    finally:
        if proc is not None:
            _kill_group(proc.pid)  # the child and anything it may have started
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL is not ignorable
                pass
            for f in (proc.stdin, proc.stdout, proc.stderr):
                try:
                    f.close()
                except OSError:
                    pass
        shutil.rmtree(workdir, ignore_errors=True)
    rc = proc.returncode
    stdout = out.decode("utf-8", "replace")
    elapsed = time.monotonic() - t0
    if timed_out:
        error = f"timeout: killed after {timeout_s:g} s"
    elif truncated:
        stdout += _TRUNC_MARK
        error = f"output limit exceeded: killed after {max_output_bytes} bytes of output"
    elif rc != 0:
        error = _error_text(bytes(err), rc)
    else:
        error = ""
    ok = not error
    return SandboxResult(ok, stdout, error, rc, timed_out, truncated, elapsed, workdir)
