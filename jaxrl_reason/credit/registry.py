"""Name -> advantage-estimator registry.

A new credit-assignment method is one decorated pure function::

    @credit.register("my_method")
    def my_method(token_rewards, response_mask, group_ids, **kwargs):
        ...
        return advantages, returns

Every registered estimator returns ``(advantages [B, T], returns [B, T])`` in float32, zero
outside ``response_mask``. Configs select estimators by name through :func:`get`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

_REGISTRY: dict[str, Callable[..., Any]] = {}


def register(name: str) -> Callable[[F], F]:
    """Decorator that registers an advantage estimator under ``name``.

    Raises:
      ValueError: if ``name`` is already registered (silent overwrites hide bugs; use
        :func:`unregister` first to replace an estimator on purpose).
    """

    def deco(fn: F) -> F:
        if name in _REGISTRY and _REGISTRY[name] is not fn:
            raise ValueError(
                f"credit estimator {name!r} is already registered "
                f"(by {_REGISTRY[name].__module__}.{_REGISTRY[name].__qualname__}); "
                "pick another name or call credit.unregister first"
            )
        _REGISTRY[name] = fn
        return fn

    return deco


def unregister(name: str) -> None:
    """Removes ``name`` from the registry (no-op when absent)."""
    _REGISTRY.pop(name, None)


def get(name: str) -> Callable[..., Any]:
    """Returns the estimator registered as ``name``.

    Raises:
      ValueError: naming the unknown estimator and listing the valid ones.
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown advantage estimator {name!r}; valid names: {', '.join(names())}"
        ) from None


def names() -> list[str]:
    """Sorted names of every registered estimator."""
    return sorted(_REGISTRY)
