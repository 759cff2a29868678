"""jaxrl_reason.models."""
