"""tpu_setup dry runs: the exact commands for a v5e-16 slice (4 workers), and the GPU script."""

import io
import os
import shlex
import subprocess
from contextlib import redirect_stdout

import pytest

from tpu_setup import tpu

BASE = ["--name", "rl-v5e", "--zone", "us-west4-a", "--accelerator-type", "v5litepod-16"]
SSH = "gcloud compute tpus tpu-vm ssh rl-v5e --zone=us-west4-a --worker=all"


def _dry(*args):
    buf = io.StringIO()
    with redirect_stdout(buf):
        assert tpu.main([*BASE, "--dry-run", *args]) == 0
    lines = buf.getvalue().strip().splitlines()
    assert lines[0] == "# rl-v5e: v5litepod-16, 4 worker(s), runtime v2-alpha-tpuv5-lite (dry run)"
    return lines[1:]


def test_worker_counts_and_runtimes():
    assert tpu.num_workers("v5litepod-16") == 4
    assert tpu.num_workers("v5litepod-8") == 1
    assert tpu.num_workers("v4-32") == 4
    assert tpu.num_workers("v5p-8") == 1
    assert tpu.num_workers("v6e-64") == 16
    assert tpu.default_runtime_version("v4-8") == "tpu-ubuntu2204-base"
    # Cloud's name for v5e is v5litepod; the short name is accepted and normalised.
    assert tpu.Tpu("x", "z", "v5e-16").accelerator_type == "v5litepod-16"
    assert tpu.num_workers("v5e-16") == 4
    with pytest.raises(ValueError, match="v5litepod-16"):
        tpu.num_workers("tpu16")


def test_create():
    assert _dry("create") == [
        "gcloud compute tpus tpu-vm create rl-v5e --zone=us-west4-a "
        "--accelerator-type=v5litepod-16 --version=v2-alpha-tpuv5-lite"
    ]
    assert _dry("create", "--queued", "--spot") == [
        "gcloud compute tpus queued-resources create rl-v5e --node-id=rl-v5e --zone=us-west4-a "
        "--accelerator-type=v5litepod-16 --runtime-version=v2-alpha-tpuv5-lite --spot"
    ]


def test_copy_to_every_worker():
    lines = _dry("copy", "--src", "/src/repo")
    assert lines == [
        "tar -czf /tmp/jaxrl_reason.tar.gz --exclude=.git --exclude=.venv --exclude=runs "
        "--exclude=__pycache__ --exclude=.pytest_cache -C /src/repo .",
        "gcloud compute tpus tpu-vm scp /tmp/jaxrl_reason.tar.gz 'rl-v5e:~/jaxrl_reason.tar.gz' "
        "--zone=us-west4-a --worker=all",
        f"{SSH} '--command=mkdir -p ~/jaxrl_reason && tar -xzf ~/jaxrl_reason.tar.gz "
        "-C ~/jaxrl_reason'",
    ]


def test_setup_installs_jax_tpu_on_every_worker():
    (line,) = _dry("setup")
    argv = shlex.split(line)
    assert argv[:8] == shlex.split(SSH) and len(argv) == 9
    script = argv[8].removeprefix("--command=").split(" && ")
    assert script == [
        "sudo apt-get update -qq",
        "sudo apt-get install -y -qq python3.11 python3.11-venv",
        "python3.11 -m venv ~/jaxrl_venv",
        "~/jaxrl_venv/bin/pip install -q -U pip",
        "~/jaxrl_venv/bin/pip install -q -r ~/jaxrl_reason/requirements.txt",
        f'~/jaxrl_venv/bin/pip install -q "jax[tpu]=={tpu.requirement_version("jax")}"',
        '~/jaxrl_venv/bin/python -c "import jax; print(jax.device_count())"',
    ]
    assert tpu.requirement_version("jax") == "0.10.2"


def test_launch_logs_stop_delete():
    (launch,) = _dry(
        "launch", "--", "--config", "experiments/configs/qwen2_5_gsm8k_grpo.py",
        "--workdir", "gs://bucket/run1", "--config.seed=1",
    )  # fmt: skip
    assert launch == (
        f"{SSH} '--command=cd ~/jaxrl_reason && JAXRL_DISTRIBUTED=1 setsid nohup "
        "~/jaxrl_venv/bin/python -m experiments.train --config "
        "experiments/configs/qwen2_5_gsm8k_grpo.py --workdir gs://bucket/run1 --config.seed=1 "
        "> ~/jaxrl_run.log 2>&1 < /dev/null & echo $! > ~/jaxrl_run.pid'"
    )
    assert _dry("logs") == [
        "gcloud compute tpus tpu-vm ssh rl-v5e --zone=us-west4-a --worker=0 "
        "'--command=tail -n +1 -F ~/jaxrl_run.log'"
    ]
    assert _dry("logs", "--worker", "all", "--no-follow") == [
        f"{SSH} '--command=tail -n 200 ~/jaxrl_run.log'"
    ]
    assert _dry("stop") == [f"{SSH} '--command=kill -TERM $(cat ~/jaxrl_run.pid)'"]
    assert _dry("delete") == ["gcloud compute tpus tpu-vm delete rl-v5e --zone=us-west4-a --quiet"]
    assert _dry("delete", "--queued") == [
        "gcloud compute tpus queued-resources delete rl-v5e --zone=us-west4-a --force --quiet"
    ]


def test_project_flag_and_single_host_launch():
    t = tpu.Tpu("one", "us-central2-b", "v4-8", project="my-proj")
    (cmd,) = t.launch(["--config", "c.py", "--workdir", "w"])
    assert "--project=my-proj" in cmd and "JAXRL_DISTRIBUTED" not in cmd[-1]


def test_gpu_script_dry_run():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = subprocess.run(
        ["bash", os.path.join(root, "tpu_setup", "gpu.sh"), "--dry-run", "--", "--config",
         "c.py", "--workdir", "runs/x"],
        capture_output=True, text=True, check=True,
    ).stdout.splitlines()  # fmt: skip
    assert [shlex.split(line) for line in out] == [
        ["python3.11", "-m", "venv", ".venv"],
        [".venv/bin/pip", "install", "-q", "-U", "pip"],
        [".venv/bin/pip", "install", "-q", "-r", "requirements.txt"],
        [".venv/bin/pip", "install", "-q", "jax[cuda13]==0.10.2"],
        [".venv/bin/python", "-c", "import jax; print(jax.devices())"],
        [".venv/bin/python", "-m", "experiments.train", "--config", "c.py", "--workdir", "runs/x"],
    ]
