"""jaxrl_reason.rollout."""
