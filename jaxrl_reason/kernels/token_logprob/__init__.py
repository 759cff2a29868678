"""Fused token log-prob + entropy (+ self-certainty) over the vocabulary.

Layout after Levanter's ``fused_cross_entropy_loss``: ``reference.py`` (the spec), ``xla.py``
(chunked scan, CPU default), ``pallas_gpu.py`` (Triton), ``pallas_tpu.py`` (Mosaic),
``api.py`` (validation and dispatch).
"""

from jaxrl_reason.kernels.token_logprob.api import default_impl, token_logprob
from jaxrl_reason.kernels.token_logprob.reference import token_logprob_reference

__all__ = ["default_impl", "token_logprob", "token_logprob_reference"]
