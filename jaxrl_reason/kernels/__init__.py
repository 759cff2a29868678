"""jaxrl_reason.kernels: fused token log-probs and token-level advantage scans.

Each op has a plain-jnp reference (the spec), an XLA implementation (the CPU default) and
Pallas kernels (GPU: Triton lowering; TPU: Mosaic), selected with ``impl=``; layout after
Levanter's ``kernels/pallas/fused_cross_entropy_loss``.
"""

from jaxrl_reason.kernels.advantage_scan import discounted_cumsum, gae
from jaxrl_reason.kernels.token_logprob import token_logprob

__all__ = ["discounted_cumsum", "gae", "token_logprob"]
