"""Shared pytest set-up: CPU JAX, deterministic, float32 matmuls at full precision."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

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
