"""jaxrl_reason.rewards."""
