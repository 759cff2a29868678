"""Name -> advantage-estimator registry.

A new credit-assignment method is one decorated pure function::

    @credit.register("my_method", inputs={"step_values": "step_values"})
    def my_method(token_rewards, response_mask, group_ids, *, step_values=None, **kwargs):
        ...
        return advantages, returns

Every registered estimator takes ``(token_rewards [B, T], response_mask [B, T], group_ids
[B])`` positionally and returns ``(advantages [B, T], returns [B, T])`` in float32, zero
outside ``response_mask``. ``inputs`` maps each further keyword argument the estimator needs
to the :class:`jaxrl_reason.rollout.Trajectories` field that feeds it (``optional`` likewise
for arguments it uses when present), so the trainer can call any estimator on any rollout,
and config validation can check before anything compiles that the configured rollout
strategy and reward components fill those fields. Configs select estimators by name through
:func:`get`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

_REGISTRY: dict[str, Callable[..., Any]] = {}
_INPUTS: dict[str, dict[str, str]] = {}
_OPTIONAL: dict[str, dict[str, str]] = {}
_LOSS_MASK: dict[str, Callable[..., Any]] = {}


def register(
    name: str,
    *,
    inputs: Mapping[str, str] | None = None,
    optional: Mapping[str, str] | None = None,
    loss_mask: Callable[..., Any] | None = None,
) -> Callable[[F], F]:
    """Decorator that registers an advantage estimator under ``name``.

    Args:
      name: the name configs use (``algo.estimator``).
      inputs: ``{keyword argument: Trajectories field}`` the estimator requires.
      optional: ``{keyword argument: Trajectories field}`` passed only when the field is set.
      loss_mask: optional ``fn(response_mask bool[B, T], **fields, **estimator_kwargs) ->
        bool[B, T]``, the tokens the policy update trains on when the method narrows the
        loss mask (SPO's ``p < rho``). It receives the same keyword arguments as the
        estimator (ignore the ones it does not use with ``**_``); None keeps the mask.

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
        _INPUTS[name] = dict(inputs or {})
        _OPTIONAL[name] = dict(optional or {})
        if loss_mask is not None:
            _LOSS_MASK[name] = loss_mask
        else:
            _LOSS_MASK.pop(name, None)
        return fn

    return deco


def unregister(name: str) -> None:
    """Removes ``name`` from the registry (no-op when absent)."""
    _REGISTRY.pop(name, None)
    _INPUTS.pop(name, None)
    _OPTIONAL.pop(name, None)
    _LOSS_MASK.pop(name, None)


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


def inputs(name: str) -> dict[str, str]:
    """``{keyword argument: Trajectories field}`` that estimator ``name`` requires."""
    get(name)
    return dict(_INPUTS[name])


def optional_inputs(name: str) -> dict[str, str]:
    """``{keyword argument: Trajectories field}`` that ``name`` uses when the field is set."""
    get(name)
    return dict(_OPTIONAL[name])


def loss_mask_fn(name: str) -> Callable[..., Any] | None:
    """The loss-mask transform registered with estimator ``name`` (None: the update trains on
    ``loss_mask`` unchanged)."""
    get(name)
    return _LOSS_MASK.get(name)


def names() -> list[str]:
    """Sorted names of every registered estimator."""
    return sorted(_REGISTRY)
