"""Token-level advantage scans (GAE, masked discounted sums): reference / XLA / Pallas."""

from jaxrl_reason.kernels.advantage_scan.api import discounted_cumsum, gae

__all__ = ["discounted_cumsum", "gae"]
