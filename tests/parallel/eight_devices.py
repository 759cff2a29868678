"""Shared harness for the checks that need 8 simulated CPU devices.

``--xla_force_host_platform_device_count=8`` only takes effect before JAX starts, and the
pytest process already runs JAX on one device, so those checks run in a fresh interpreter:

* pytest side: :func:`run_checks` starts ``python <script> <workdir> [flags]`` with the flag set
  and returns the JSON report (``{name: {"ok": bool, "detail": str}}``, the last stdout line);
  :func:`check` asserts one entry.
* script side: :func:`configure_process` (call before importing JAX) sets the flags; the
  script records its checks with :func:`run_all` and prints the report.

Imports nothing from JAX, so the scripts can import it first.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import traceback
from collections.abc import Callable

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
DEVICE_FLAG = "--xla_force_host_platform_device_count=8"

#: The four meshes of issue 6 over 8 devices.
MESHES = {
    "data8": dict(data=8, fsdp=1, tensor=1),
    "fsdp8": dict(data=1, fsdp=8, tensor=1),
    "fsdp4_tensor2": dict(data=1, fsdp=4, tensor=2),
    "data2_fsdp2_tensor2": dict(data=2, fsdp=2, tensor=2),
}


def configure_process() -> None:
    """Script side, before ``import jax``: 8 CPU devices, cheaper LLVM passes (compiling for 8
    partitions dominates the run time; these halve it on CPU), the repo on ``sys.path``."""
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    if "--xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " " + DEVICE_FLAG
    os.environ["XLA_FLAGS"] += (
        " --xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
    )
    if REPO not in sys.path:
        sys.path.insert(0, REPO)


def run_all(results: dict, checks: list[Callable[[dict], None]]) -> dict:
    """Script side: runs each ``check(results)``; an exception becomes an ``error_*`` entry
    (reported, and the remaining checks still run)."""
    for fn in checks:
        try:
            fn(results)
        except Exception:
            results[f"error_{len(results)}"] = {"ok": False, "detail": traceback.format_exc()}
    return results


def run_checks(script: str, workdir: str, *flags: str, timeout: int = 900) -> dict:
    """Pytest side: runs ``tests/parallel/<script>`` on 8 devices and returns its report."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + DEVICE_FLAG).strip()
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, os.path.join(HERE, script), workdir, *flags],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    errors = {k: v["detail"] for k, v in results.items() if k.startswith("error_")}
    assert not errors, errors
    return results


def check(report: dict, name: str) -> None:
    """Asserts that check ``name`` ran and passed (its detail is the failure message)."""
    assert name in report, sorted(report)
    assert report[name]["ok"], report[name]["detail"]
