"""jaxrl_reason.eval."""
