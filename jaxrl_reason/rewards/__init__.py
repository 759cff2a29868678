"""jaxrl_reason.rewards: host-side reward functions (verifiers, shaping, mixing).

Names are resolved lazily (PEP 562) so that ``import jaxrl_reason.rewards`` stays cheap: the
math-verify worker process imports this package and must not pay for JAX or sympy.
"""

import importlib

# name -> submodule that defines it
_EXPORTS = {
    # extract.py
    "ANSWER_FORMATS": "extract",
    "extract_answer": "extract",
    "extract_answer_is": "extract",
    "extract_boxed": "extract",
    "extract_hash": "extract",
    "extract_last_number": "extract",
    "extraction_stats": "extract",
    # verify.py
    "MathVerifyWorker": "verify",
    "parse_number": "verify",
    "verify_answer": "verify",
    "verify_batch": "verify",
    # shaping.py
    "format_reward": "shaping",
    "kimi_length_reward": "shaping",
    "length_penalty": "shaping",
    "overlong_penalty": "shaping",
    # registry.py (components.py registers the built-in components)
    "RewardContext": "registry",
    "compute_rewards": "registry",
    "get_reward": "registry",
    "register_reward": "registry",
    "reward_names": "registry",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
