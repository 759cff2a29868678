"""jaxrl_reason.losses."""
