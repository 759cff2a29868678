"""jaxrl_reason.kernels."""
