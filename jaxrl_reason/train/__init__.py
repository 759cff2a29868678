"""jaxrl_reason.train."""
