"""Shared pytest set-up: CPU JAX, deterministic, float32 matmuls at full precision."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

# Reference comparisons need exact float32 matmuls on every backend.
jax.config.update("jax_default_matmul_precision", "highest")
