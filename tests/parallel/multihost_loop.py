"""One process of a simulated multi-host training run; see test_multihost_loop.py.

    python tests/parallel/multihost_loop.py DEVICES -- [experiments.train args]

Sets ``DEVICES`` simulated CPU devices for this process, then runs ``experiments.train.main``
with the given arguments: the launcher a TPU pod runs (``tpu_setup`` starts ``python -m
experiments.train`` on every worker with ``JAXRL_DISTRIBUTED=1``). Here the multi-process
launch is described by ``JAX_COORDINATOR_ADDRESS`` / ``JAX_NUM_PROCESSES`` /
``JAX_PROCESS_ID`` in the environment, which the launcher's
``parallel.maybe_initialize_distributed()`` passes to ``jax.distributed.initialize``; without
them the same script is a one-process run. Exits with the launcher's status.
"""

from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))


def main(argv: list[str]) -> int:
    devices, args = int(argv[0]), argv[argv.index("--") + 1 :]
    os.environ["JAX_PLATFORMS"] = "cpu"
    # Cheaper LLVM passes: compiling for 8 partitions dominates the run time on CPU, and the
    # numbers do not change (the same flags in both runs being compared).
    os.environ["XLA_FLAGS"] = (
        f"--xla_force_host_platform_device_count={devices} "
        "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
    )
    if REPO not in sys.path:
        sys.path.insert(0, REPO)
    import jax

    # The same float32 matmuls in every run (as the test suite's conftest sets).
    jax.config.update("jax_default_matmul_precision", "highest")
    cache = os.environ.get("JAXRL_REASON_JAX_CACHE", "")
    if cache and cache != "0":
        jax.config.update("jax_compilation_cache_dir", cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    from experiments import train

    return train.main(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
