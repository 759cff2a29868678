"""Policy, value and regulariser losses as pure, jit-able array functions.

``policy_loss`` (PPO clip / clip-higher / dual-clip, GSPO), ``aggregate`` (verl's four loss
aggregation modes), ``kl`` (k1 / k2 / k3 estimators), ``entropy_loss``, ``value_loss``,
``sft_loss`` (masked NLL) and ``dpo_loss`` (Rafailov et al. 2023, eq. 7).
Inputs are ``[B, T]`` float32 with a ``response_mask``; configuration arguments that change
the computation (modes, kinds, loss type) are static under ``jax.jit``. Formulas, papers and
differences from verl / TRL / Tunix: ``docs/algorithms.md``.
"""

from jaxrl_reason.losses.aggregation import AGG_MODES, aggregate
from jaxrl_reason.losses.policy import LOSS_TYPES, policy_loss
from jaxrl_reason.losses.preference import dpo_loss, sequence_logprob, sft_loss
from jaxrl_reason.losses.regularizers import KL_KINDS, entropy_from_logits, entropy_loss, kl
from jaxrl_reason.losses.value import value_loss

__all__ = [
    "AGG_MODES",
    "KL_KINDS",
    "LOSS_TYPES",
    "aggregate",
    "dpo_loss",
    "entropy_from_logits",
    "entropy_loss",
    "kl",
    "policy_loss",
    "sequence_logprob",
    "sft_loss",
    "value_loss",
]
