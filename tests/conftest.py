"""Shared pytest set-up: CPU JAX, deterministic, float32 matmuls at full precision."""

import gc
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import pytest  # noqa: E402

# Reference comparisons need exact float32 matmuls on every backend.
jax.config.update("jax_default_matmul_precision", "highest")

# Most of the suite's time is XLA compiling; a persistent cache makes a second run (and
# tests that compile the same function in separate processes) much cheaper.
_cache = os.environ.get(
    "JAXRL_REASON_JAX_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "jaxrl_reason", "jax")
)
if _cache != "0":
    jax.config.update("jax_compilation_cache_dir", _cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)

# tests/mutation holds a script (run_mutations.py) that plants bugs in a copy of the repo
# and runs other test files against them; it is not a test module.
collect_ignore = ["mutation"]


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drop jax's compiled programs after each test module. Every XLA CPU executable keeps a
    few memory mappings of JIT code alive, and the whole suite in one process reached the
    kernel's limit of 65,530 mappings (vm.max_map_count): thread creation and allocations then
    fail ("can't start new thread", MemoryError, a segfault while loading an executable).
    A module's own tests still share their compiles; the persistent cache makes the rest
    cheap."""
    yield
    jax.clear_caches()
    gc.collect()


def _mapping_count() -> int:
    try:
        with open("/proc/self/maps") as f:
            return sum(1 for _ in f)
    except OSError:  # not Linux
        return 0


def pytest_sessionfinish(session, exitstatus):
    path = os.environ.get("JAXRL_REASON_REPORT_MAPS")
    if path:
        with open(path, "w") as f:
            f.write(f"{_mapping_count()}\n")
