"""Multi-host start-up: ``jax.distributed.initialize()`` when launched on several hosts.

The same script runs on every host of a TPU pod slice (``gcloud ... ssh --worker=all``), on a
SLURM / MPI GPU cluster, or alone on one machine. Only in the multi-host cases must JAX's
distributed runtime be initialised, before any other JAX call touches the devices.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

# Environment variables that reveal a multi-process launch, with the value that means
# "more than one process". TPU VMs list every worker's hostname, comma-separated.
_ENV_FORCE = "JAXRL_DISTRIBUTED"


def _int(env: Mapping[str, str], key: str) -> int:
    try:
        return int(env.get(key, "1"))
    except ValueError:
        return 1


def multihost_launch_detected(env: Mapping[str, str] | None = None) -> bool:
    """Whether the environment describes a launch with more than one process.

    Detected: ``JAXRL_DISTRIBUTED=1`` (force) / ``0`` (never); an explicit coordinator
    (``JAX_COORDINATOR_ADDRESS`` with ``JAX_NUM_PROCESSES`` > 1); a multi-host TPU slice
    (``TPU_WORKER_HOSTNAMES`` with several names, or ``MEGASCALE_NUM_SLICES`` > 1); SLURM
    (``SLURM_NTASKS`` > 1); Open MPI (``OMPI_COMM_WORLD_SIZE`` > 1).
    """
    env = os.environ if env is None else env
    forced = env.get(_ENV_FORCE)
    if forced is not None and forced != "":
        return forced.lower() in ("1", "true", "yes")
    if env.get("JAX_COORDINATOR_ADDRESS") and _int(env, "JAX_NUM_PROCESSES") > 1:
        return True
    hosts = [h for h in env.get("TPU_WORKER_HOSTNAMES", "").split(",") if h.strip()]
    if len(hosts) > 1 or _int(env, "MEGASCALE_NUM_SLICES") > 1:
        return True
    return _int(env, "SLURM_NTASKS") > 1 or _int(env, "OMPI_COMM_WORLD_SIZE") > 1


def maybe_initialize_distributed(env: Mapping[str, str] | None = None) -> bool:
    """Calls ``jax.distributed.initialize()`` once when the launch is multi-host.

    Must run before anything else queries devices. On TPU VMs, SLURM and Open MPI, JAX finds
    the coordinator itself; otherwise set ``JAX_COORDINATOR_ADDRESS`` (``host:port``),
    ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID``, which are passed through.

    Returns:
      True when the distributed runtime is (now) initialised, False on a single host.
    """
    import jax

    env = os.environ if env is None else env
    if not multihost_launch_detected(env):
        return False
    if jax.distributed.is_initialized():
        return True
    kwargs = {}
    if env.get("JAX_COORDINATOR_ADDRESS"):
        kwargs["coordinator_address"] = env["JAX_COORDINATOR_ADDRESS"]
        if "JAX_NUM_PROCESSES" in env:
            kwargs["num_processes"] = int(env["JAX_NUM_PROCESSES"])
        if "JAX_PROCESS_ID" in env:
            kwargs["process_id"] = int(env["JAX_PROCESS_ID"])
    jax.distributed.initialize(**kwargs)
    return True


def is_main_process() -> bool:
    """True on process 0: the only process that writes logs, plots and run files.

    (Orbax checkpoints are written by all processes: each saves its own shards.)
    """
    import jax

    return jax.process_index() == 0
