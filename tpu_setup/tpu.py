"""Create, provision, launch on, watch and delete a Cloud TPU VM or pod slice.

Every sub-command prints the exact commands it runs; ``--dry-run`` prints them only. The same
experiment script runs on every worker (``--worker=all``); JAX's multi-host runtime connects
them (``jax.distributed.initialize()``, see ``jaxrl_reason/parallel/distributed.py``).

Typical session (a v5e-16 slice: 16 chips on 4 workers)::

    T="python -m tpu_setup.tpu --name rl-v5e --zone us-west4-a --accelerator-type v5litepod-16"
    $T create --spot          # or: create --queued (queued resources: waits for capacity)
    $T copy                   # tar the repo, scp to every worker, unpack in ~/jaxrl_reason
    $T setup                  # venv + requirements + jax[tpu] on every worker
    $T launch -- --config experiments/configs/qwen2_5_gsm8k_grpo.py --workdir gs://B/run1
    $T logs                   # follow worker 0's log (--worker all: every worker)
    $T stop                   # SIGTERM: the run checkpoints at the next step and exits
    $T delete                 # tear down (and --queued to delete the queued resource)

See docs/scaling.md.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Sequence

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REMOTE_DIR = "~/jaxrl_reason"
REMOTE_VENV = "~/jaxrl_venv"
REMOTE_LOG = "~/jaxrl_run.log"
REMOTE_PID = "~/jaxrl_run.pid"
TARBALL = "jaxrl_reason.tar.gz"

# Default TPU software versions (runtime images) per generation.
RUNTIME_VERSIONS = {
    "v2": "tpu-ubuntu2204-base",
    "v3": "tpu-ubuntu2204-base",
    "v4": "tpu-ubuntu2204-base",
    "v5litepod": "v2-alpha-tpuv5-lite",
    "v5p": "v2-alpha-tpuv5",
    "v6e": "v2-alpha-tpuv6e",
}


def normalize_type(accelerator_type: str) -> str:
    """Cloud names v5e slices ``v5litepod-N``; accept the marketing name ``v5e-N`` too."""
    return re.sub(r"^v5e-", "v5litepod-", accelerator_type)


def _parse_type(accelerator_type: str) -> tuple[str, int]:
    accelerator_type = normalize_type(accelerator_type)
    m = re.fullmatch(r"(v\d+[a-z]*|v5litepod)-(\d+)", accelerator_type)
    if not m:
        raise ValueError(
            f"--accelerator-type={accelerator_type!r}: expected e.g. v5litepod-16, v4-32, "
            "v5p-8, v6e-8"
        )
    return m.group(1), int(m.group(2))


def default_runtime_version(accelerator_type: str) -> str:
    """The TPU VM image for an accelerator type (``v5litepod-16`` -> ``v2-alpha-tpuv5-lite``)."""
    gen, _ = _parse_type(accelerator_type)
    if gen not in RUNTIME_VERSIONS:
        raise ValueError(f"no default runtime for {accelerator_type}; pass --version")
    return RUNTIME_VERSIONS[gen]


def num_workers(accelerator_type: str) -> int:
    """Hosts (TPU VM workers) in a slice.

    v5e / v6e count chips: up to 8 chips fit one host, larger slices have 4 chips per host
    (``v5litepod-16`` -> 4 workers). v2 / v3 / v4 / v5p count TensorCores: 8 per host
    (``v4-32`` -> 4 workers).
    """
    gen, n = _parse_type(accelerator_type)
    if gen in ("v5litepod", "v6e"):
        return 1 if n <= 8 else n // 4
    return max(1, n // 8)


def requirement_version(package: str, requirements: str | None = None) -> str:
    """The pinned version of ``package`` in requirements.txt (e.g. ``jax`` -> ``0.10.2``)."""
    path = requirements or os.path.join(REPO_ROOT, "requirements.txt")
    with open(path) as f:
        for line in f:
            m = re.match(rf"^{re.escape(package)}==([^\s#;]+)", line.strip())
            if m:
                return m.group(1)
    raise ValueError(f"{package} is not pinned in {path}")


class Tpu:
    """Builds the gcloud commands for one TPU VM / slice (a pure function of the flags)."""

    def __init__(
        self,
        name: str,
        zone: str,
        accelerator_type: str,
        *,
        project: str | None = None,
        version: str | None = None,
    ):
        self.name = name
        self.zone = zone
        self.accelerator_type = normalize_type(accelerator_type)
        self.project = project
        self.version = version or default_runtime_version(self.accelerator_type)
        self.workers = num_workers(self.accelerator_type)

    def _common(self) -> list[str]:
        flags = [f"--zone={self.zone}"]
        if self.project:
            flags.append(f"--project={self.project}")
        return flags

    def ssh(self, command: str, worker: str = "all") -> list[str]:
        """``gcloud ... tpu-vm ssh NAME --worker=W --command=CMD`` (W = ``all`` or an index)."""
        return [
            "gcloud", "compute", "tpus", "tpu-vm", "ssh", self.name, *self._common(),
            f"--worker={worker}", f"--command={command}",
        ]  # fmt: skip

    def create(self, *, queued: bool = False, spot: bool = False) -> list[list[str]]:
        """Create the VM / slice directly, or as a queued resource that waits for capacity."""
        if queued:
            cmd = [
                "gcloud", "compute", "tpus", "queued-resources", "create", self.name,
                f"--node-id={self.name}", *self._common(),
                f"--accelerator-type={self.accelerator_type}",
                f"--runtime-version={self.version}",
            ]  # fmt: skip
        else:
            cmd = [
                "gcloud", "compute", "tpus", "tpu-vm", "create", self.name, *self._common(),
                f"--accelerator-type={self.accelerator_type}", f"--version={self.version}",
            ]  # fmt: skip
        if spot:
            cmd.append("--spot")
        return [cmd]

    def status(self, *, queued: bool = False) -> list[list[str]]:
        kind = ["queued-resources"] if queued else ["tpu-vm"]
        return [["gcloud", "compute", "tpus", *kind, "describe", self.name, *self._common()]]

    def copy(self, src: str = REPO_ROOT) -> list[list[str]]:
        """Pack the working tree (no .git / .venv / runs), scp it to every worker, unpack."""
        local = os.path.join("/tmp", TARBALL)
        return [
            [
                "tar", "-czf", local, "--exclude=.git", "--exclude=.venv", "--exclude=runs",
                "--exclude=__pycache__", "--exclude=.pytest_cache", "-C", src, ".",
            ],
            [
                "gcloud", "compute", "tpus", "tpu-vm", "scp", local, f"{self.name}:~/{TARBALL}",
                *self._common(), "--worker=all",
            ],
            self.ssh(f"mkdir -p {REMOTE_DIR} && tar -xzf ~/{TARBALL} -C {REMOTE_DIR}"),
        ]  # fmt: skip

    def setup(self, jax_version: str | None = None, python: str = "python3.11") -> list[list[str]]:
        """A venv on every worker with the pinned requirements and the TPU build of JAX.

        TPU VM images are Ubuntu 22.04 with Python 3.10; the project needs 3.11, which the
        distribution ships as ``python3.11`` (installed first).
        """
        jax_version = jax_version or requirement_version("jax")
        pip = f"{REMOTE_VENV}/bin/pip"
        script = " && ".join(
            [
                "sudo apt-get update -qq",
                f"sudo apt-get install -y -qq {python} {python}-venv",
                f"{python} -m venv {REMOTE_VENV}",
                f"{pip} install -q -U pip",
                f"{pip} install -q -r {REMOTE_DIR}/requirements.txt",
                f'{pip} install -q "jax[tpu]=={jax_version}"',
                f'{REMOTE_VENV}/bin/python -c "import jax; print(jax.device_count())"',
            ]
        )
        return [self.ssh(script)]

    def launch(self, args: Sequence[str], module: str = "experiments.train") -> list[list[str]]:
        """Start ``python -m MODULE ARGS`` on every worker, detached, logging to a file.

        ``JAXRL_DISTRIBUTED=1`` makes the script call ``jax.distributed.initialize()`` on a
        multi-host slice (``parallel.maybe_initialize_distributed``, the first thing
        ``experiments.train`` does; the TPU runtime supplies the coordinator). The same entry
        point, started as 2 CPU processes with an explicit coordinator, is what
        ``tests/parallel/test_multihost_loop.py`` trains, resumes and checks against one
        process. Use a ``gs://`` workdir so every worker sees the same checkpoints.
        """
        env = "JAXRL_DISTRIBUTED=1 " if self.workers > 1 else ""
        run = (
            f"cd {REMOTE_DIR} && {env}setsid nohup {REMOTE_VENV}/bin/python -m {module} "
            f"{shlex.join(args)} > {REMOTE_LOG} 2>&1 < /dev/null & echo $! > {REMOTE_PID}"
        )
        return [self.ssh(run)]

    def logs(self, worker: str = "0", follow: bool = True) -> list[list[str]]:
        tail = "tail -n +1 -F" if follow else "tail -n 200"
        return [self.ssh(f"{tail} {REMOTE_LOG}", worker=worker)]

    def stop(self) -> list[list[str]]:
        """SIGTERM the run on every worker: it saves a checkpoint at the next step and exits."""
        return [self.ssh(f"kill -TERM $(cat {REMOTE_PID})")]

    def delete(self, *, queued: bool = False) -> list[list[str]]:
        if queued:
            return [
                [
                    "gcloud", "compute", "tpus", "queued-resources", "delete", self.name,
                    *self._common(), "--force", "--quiet",
                ]
            ]  # fmt: skip
        return [["gcloud", "compute", "tpus", "tpu-vm", "delete", self.name, *self._common(),
                 "--quiet"]]  # fmt: skip


def run_commands(commands: Sequence[Sequence[str]], *, dry_run: bool, out=None) -> int:
    """Prints each command (shell-quoted) and, unless ``dry_run``, runs it; stops on failure."""
    out = out or sys.stdout
    for cmd in commands:
        print(shlex.join(cmd), file=out, flush=True)
        if not dry_run:
            rc = subprocess.call(list(cmd))
            if rc:
                print(f"command failed with exit code {rc}", file=sys.stderr)
                return rc
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tpu_setup.tpu", description=__doc__.split("\n")[0])
    p.add_argument("--name", required=True, help="TPU VM / queued resource name")
    p.add_argument("--zone", required=True, help="e.g. us-west4-a (v5e), us-central2-b (v4)")
    p.add_argument("--accelerator-type", required=True, help="e.g. v5litepod-16, v4-32")
    p.add_argument("--project", default=None, help="GCP project (default: gcloud config)")
    p.add_argument("--version", default=None, help="TPU runtime image (default per type)")
    p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("create", help="create the TPU VM / slice")
    c.add_argument("--queued", action="store_true", help="use queued resources")
    c.add_argument("--spot", action="store_true", help="spot (preemptible) capacity")
    s = sub.add_parser("status", help="describe the VM / queued resource")
    s.add_argument("--queued", action="store_true")
    cp = sub.add_parser("copy", help="copy this repository to every worker")
    cp.add_argument("--src", default=REPO_ROOT)
    st = sub.add_parser("setup", help="install requirements + jax[tpu] on every worker")
    st.add_argument("--jax-version", default=None, help="default: the pin in requirements.txt")
    st.add_argument("--python", default="python3.11", help="interpreter for the venv")
    la = sub.add_parser("launch", help="run an experiment on every worker (args after --)")
    la.add_argument("--module", default="experiments.train")
    la.add_argument("args", nargs=argparse.REMAINDER)
    lo = sub.add_parser("logs", help="stream a worker's log")
    lo.add_argument("--worker", default="0", help="worker index or 'all'")
    lo.add_argument("--no-follow", action="store_true")
    sub.add_parser("stop", help="SIGTERM the run (it checkpoints, then exits)")
    d = sub.add_parser("delete", help="tear down")
    d.add_argument("--queued", action="store_true")
    return p


def commands_for(argv: Sequence[str]) -> tuple[list[list[str]], bool, Tpu]:
    """Parses ``argv`` and returns (commands, dry_run, tpu) without running anything."""
    a = build_parser().parse_args(list(argv))
    tpu = Tpu(a.name, a.zone, a.accelerator_type, project=a.project, version=a.version)
    if a.command == "create":
        cmds = tpu.create(queued=a.queued, spot=a.spot)
    elif a.command == "status":
        cmds = tpu.status(queued=a.queued)
    elif a.command == "copy":
        cmds = tpu.copy(a.src)
    elif a.command == "setup":
        cmds = tpu.setup(a.jax_version, a.python)
    elif a.command == "launch":
        args = a.args[1:] if a.args[:1] == ["--"] else a.args
        if not args:
            raise SystemExit("launch: give the experiment's flags after --, e.g. -- --config ...")
        cmds = tpu.launch(args, module=a.module)
    elif a.command == "logs":
        cmds = tpu.logs(a.worker, follow=not a.no_follow)
    elif a.command == "stop":
        cmds = tpu.stop()
    else:
        cmds = tpu.delete(queued=a.queued)
    return cmds, a.dry_run, tpu


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    cmds, dry_run, tpu = commands_for(argv)
    # A comment line, so the printed commands can be pasted into a shell as they are.
    print(
        f"# {tpu.name}: {tpu.accelerator_type}, {tpu.workers} worker(s), runtime {tpu.version}"
        + (" (dry run)" if dry_run else "")
    )
    return run_commands(cmds, dry_run=dry_run)


if __name__ == "__main__":
    sys.exit(main())
