"""jaxrl_reason.data."""
