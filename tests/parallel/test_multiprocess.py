"""A simulated 2-host run: two processes x 2 CPU devices joined by jax.distributed (gloo).

Each process runs ``multiprocess_checks.py``; see its docstring for what is checked.
"""

import json
import os
import socket
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
CHECKS = [
    "distributed",
    "main_process",
    "global_batch",
    "sharded_across_hosts",
    "host_transfers",
    "stop_agreed",
    "reshard_restore",
    "only_main_writes",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("multiprocess"))
    port = _free_port()
    procs = []
    for pid in range(2):
        env = dict(os.environ)
        env.update(
            JAX_COORDINATOR_ADDRESS=f"localhost:{port}",
            JAX_NUM_PROCESSES="2",
            JAX_PROCESS_ID=str(pid),
            PYTHONPATH=REPO + os.pathsep + env.get("PYTHONPATH", ""),
        )
        procs.append(
            subprocess.Popen(
                [sys.executable, os.path.join(HERE, "multiprocess_checks.py"), workdir],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
            )
        )
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=300)
        assert p.returncode == 0, stderr[-4000:]
        report = json.loads(stdout.strip().splitlines()[-1])
        assert "error" not in report, report["error"]
        out.append(report)
    return out


@pytest.mark.parametrize("check", CHECKS)
def test_two_process_run(reports, check):
    for pid, report in enumerate(reports):
        assert report[check], f"process {pid}: {check} failed ({report})"
