"""jaxrl_reason.parallel."""
