"""jaxrl_reason: reinforcement learning for reasoning language models in JAX.

Layers (lower never import higher): ``kernels``, ``models`` -> ``rollout`` -> ``rewards``,
``credit``, ``losses`` -> ``train``, ``parallel`` -> ``experiments``.
"""

__version__ = "0.1.0"
