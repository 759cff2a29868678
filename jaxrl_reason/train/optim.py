"""Optimiser: AdamW + schedule + clipping, on a trainable subset, skipping non-finite steps.

``build_optimizer(cfg, params)`` returns an optax ``GradientTransformationExtraArgs``::

    skip_nonfinite(                        # NaN/inf loss or gradient: no update, counted
      trainable_subset(                    # frozen leaves / layer slices: zero update, no state
        chain(clip_by_global_norm(max_norm), adamw(schedule, b1, b2, eps, weight_decay))))

Use it as ``updates, opt_state = tx.update(grads, opt_state, params, loss=loss)`` then
``optax.apply_updates(params, updates)``; ``nonfinite_stats(opt_state)`` gives the counts to
log. Global-norm clipping sees only the trainable gradients, so frozen layers do not shrink the
update of the trained ones.

Config (``cfg`` fields, all optional except ``learning_rate``)::

    learning_rate=1e-6  schedule="cosine"|"constant"  warmup_steps=0  total_steps=...
    end_lr_ratio=0.0    b1=0.9  b2=0.999  eps=1e-8  weight_decay=0.0  grad_clip=1.0 (0 = off)
    trainable="all"|"last_k"|"regex"  last_k=1  trainable_regex=""  layers_regex="layers"
    also_train_regex=""  decay_regex=""   (weight decay on leaves whose path matches;
                                            default: every leaf with ndim >= 2 outside norms)
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

#: ``optim.schedule`` names :func:`make_schedule` supports.
SCHEDULES: tuple[str, ...] = ("constant", "cosine")
#: ``optim.trainable`` modes :func:`trainable_spec` supports.
TRAINABLE_MODES: tuple[str, ...] = ("all", "last_k", "regex")

# ---------------------------------------------------------------------------------------------
# Paths.


def path_str(path: tuple) -> str:
    """``(DictKey('layers'), GetAttrKey('value'), ...)`` -> ``"layers"``, joined with ``/``.

    The ``value`` attribute of NNX Variables is dropped so paths read like module paths.
    """
    parts = []
    for k in path:
        if isinstance(k, jax.tree_util.DictKey):
            parts.append(str(k.key))
        elif isinstance(k, jax.tree_util.GetAttrKey):
            parts.append(k.name)
        elif isinstance(k, jax.tree_util.SequenceKey):
            parts.append(str(k.idx))
        elif isinstance(k, jax.tree_util.FlattenedIndexKey):
            parts.append(str(k.key))
        else:  # pragma: no cover - future key types
            parts.append(str(k))
    if parts and parts[-1] == "value":
        parts = parts[:-1]
    return "/".join(parts)


def leaf_paths(tree: Any) -> list[str]:
    """Path strings of ``tree``'s leaves, in ``jax.tree.leaves`` order."""
    return [path_str(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


# ---------------------------------------------------------------------------------------------
# Schedules.


def make_schedule(
    learning_rate: float,
    *,
    schedule: str = "constant",
    warmup_steps: int = 0,
    total_steps: int | None = None,
    end_lr_ratio: float = 0.0,
) -> optax.Schedule:
    """Linear warm-up from 0 to ``learning_rate``, then cosine decay or constant.

    Cosine: ``lr(t) = end + (peak - end) * (1 + cos(pi * (t - w) / (T - w))) / 2`` for
    ``w <= t <= T`` with ``end = end_lr_ratio * peak`` (Loshchilov & Hutter, SGDR, 2017);
    ``optax.warmup_cosine_decay_schedule``. ``t`` counts *applied* updates (skipped
    non-finite steps do not advance it).

    Raises:
      ValueError: unknown ``schedule``, or cosine without ``total_steps > warmup_steps``.
    """
    if warmup_steps < 0:
        raise ValueError(f"optim.warmup_steps={warmup_steps}: must be >= 0")
    if schedule == "constant":
        if warmup_steps == 0:
            return optax.constant_schedule(learning_rate)
        return optax.join_schedules(
            [
                optax.linear_schedule(0.0, learning_rate, warmup_steps),
                optax.constant_schedule(learning_rate),
            ],
            [warmup_steps],
        )
    if schedule == "cosine":
        if total_steps is None or total_steps <= warmup_steps:
            raise ValueError(
                f"optim.schedule='cosine' needs total_steps ({total_steps}) > warmup_steps "
                f"({warmup_steps})"
            )
        return optax.warmup_cosine_decay_schedule(
            init_value=0.0,
            peak_value=learning_rate,
            warmup_steps=warmup_steps,
            decay_steps=total_steps,
            end_value=end_lr_ratio * learning_rate,
        )
    raise ValueError(f"optim.schedule={schedule!r}: expected 'cosine' or 'constant'")


# ---------------------------------------------------------------------------------------------
# Trainable subsets.

# A leaf's trainable spec: True (all of it), False (frozen) or an int ``s``: only the slice
# ``leaf[s:]`` along the leading (stacked-layer) axis trains.
Spec = bool | int


def trainable_spec(
    params: Any,
    mode: str = "all",
    *,
    last_k: int = 1,
    regex: str = "",
    layers_regex: str = r"(^|/)layers(/|$)",
    also_train_regex: str = "",
) -> Any:
    """Which parameters train: a tree like ``params`` of :data:`Spec` leaves.

    Args:
      params: parameter pytree (``nnx.State``, dict, ...).
      mode: ``"all"``; ``"regex"`` (leaves whose path matches ``regex`` train);
        ``"last_k"`` (the last ``last_k`` transformer layers train).
      last_k: number of final layers to train in ``last_k`` mode.
      regex: path regex for ``regex`` mode (``re.search`` on ``"a/b/c"`` paths).
      layers_regex: identifies layer parameters. A matching path with a numeric component
        after the match (``layers/7/attn/q``) is one unstacked layer; otherwise the leaf is
        stacked ``[L, ...]`` (the scanned-layers layout) and trains the slice ``[L-k:]``.
      also_train_regex: in ``last_k`` mode, non-layer leaves that train too (e.g.
        ``"final_norm|lm_head"``); default none.

    Raises:
      ValueError: unknown mode, no leaf selected, or ``last_k`` out of range.
    """
    leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    paths = [path_str(p) for p, _ in leaves]
    arrays = [x for _, x in leaves]
    if mode == "all":
        specs: list[Spec] = [True] * len(arrays)
    elif mode == "regex":
        if not regex:
            raise ValueError("optim.trainable='regex' needs optim.trainable_regex")
        pat = re.compile(regex)
        specs = [bool(pat.search(p)) for p in paths]
    elif mode == "last_k":
        layer_pat = re.compile(layers_regex)
        extra = re.compile(also_train_regex) if also_train_regex else None
        specs = []
        indices: list[int | None] = []
        for p in paths:
            m = layer_pat.search(p)
            idx = None
            if m:
                rest = p[m.end() :].lstrip("/").split("/", 1)[0]
                idx = int(rest) if rest.isdigit() else -1  # -1: stacked leaf
            indices.append(idx)
        unstacked = [i for i in indices if i is not None and i >= 0]
        stacked_lens = {np.shape(a)[0] for a, i in zip(arrays, indices, strict=True) if i == -1}
        num_layers = max(unstacked) + 1 if unstacked else None
        if stacked_lens:
            if len(stacked_lens) > 1 or (num_layers and num_layers != next(iter(stacked_lens))):
                raise ValueError(f"inconsistent layer counts {sorted(stacked_lens)}")
            num_layers = next(iter(stacked_lens))
        if num_layers is None:
            raise ValueError(f"optim.layers_regex={layers_regex!r} matches no parameter path")
        if not 1 <= last_k <= num_layers:
            raise ValueError(f"optim.last_k={last_k}: must be in [1, {num_layers}]")
        first = num_layers - last_k
        for p, i in zip(paths, indices, strict=True):
            if i is None:
                specs.append(bool(extra and extra.search(p)))
            elif i == -1:
                specs.append(True if first == 0 else first)
            else:
                specs.append(i >= first)
    else:
        raise ValueError(f"optim.trainable={mode!r}: expected 'all', 'last_k' or 'regex'")
    if not any(s is not False for s in specs):
        raise ValueError(f"optim.trainable={mode!r} selects no parameter")
    return jax.tree_util.tree_unflatten(treedef, specs)


def _slice(x: Any, spec: Spec) -> Any:
    return x if spec is True else x[spec:]


def num_trainable(params: Any, spec: Any) -> int:
    """Number of trainable scalars under ``spec``."""
    leaves = jax.tree.leaves(params)
    specs = jax.tree.structure(params).flatten_up_to(spec)
    return int(
        sum(
            np.prod(_slice_shape(x, s))
            for x, s in zip(leaves, specs, strict=True)
            if s is not False
        )
    )


def _slice_shape(x: Any, s: Spec) -> tuple[int, ...]:
    shape = np.shape(x)
    return shape if s is True else (shape[0] - s, *shape[1:])


class TrainableState(NamedTuple):
    inner: Any


def trainable_subset(
    inner: optax.GradientTransformation, spec: Any
) -> optax.GradientTransformation:
    """Runs ``inner`` on the trainable part of the parameters only.

    The inner optimiser sees a flat ``{index: array}`` dict of the trainable leaves (stacked
    leaves sliced to their trainable layers), so frozen parameters hold no optimiser state and
    do not enter the clipping norm. Frozen leaves and layer slices get an exact zero update.
    (``optax.masked`` would instead pass frozen gradients through unchanged.)
    """

    def select(tree):
        leaves = jax.tree.leaves(tree)
        specs = jax.tree.structure(tree).flatten_up_to(spec)
        return {
            f"{i:05d}": _slice(x, s)
            for i, (x, s) in enumerate(zip(leaves, specs, strict=True))
            if s is not False
        }

    def init_fn(params):
        return TrainableState(inner.init(select(params)))

    def update_fn(updates, state, params=None):
        sub_params = None if params is None else select(params)
        sub_updates, new_inner = inner.update(select(updates), state.inner, sub_params)
        leaves, treedef = jax.tree.flatten(updates)
        specs = treedef.flatten_up_to(spec)
        out = []
        for i, (g, s) in enumerate(zip(leaves, specs, strict=True)):
            if s is False:
                out.append(jnp.zeros_like(g))
            elif s is True:
                out.append(sub_updates[f"{i:05d}"].astype(g.dtype))
            else:
                u = sub_updates[f"{i:05d}"].astype(g.dtype)
                out.append(jnp.concatenate([jnp.zeros_like(g[:s]), u], axis=0))
        return jax.tree.unflatten(treedef, out), TrainableState(new_inner)

    return optax.GradientTransformation(init_fn, update_fn)


# ---------------------------------------------------------------------------------------------
# Non-finite protection.


class SkipNonFiniteState(NamedTuple):
    """``total_skipped``: steps skipped so far; ``consecutive_skipped``: the current run."""

    inner: Any
    total_skipped: jax.Array
    consecutive_skipped: jax.Array
    last_finite: jax.Array


def _all_finite(tree: Any) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def skip_nonfinite(inner: optax.GradientTransformation) -> optax.GradientTransformationExtraArgs:
    """Applies ``inner`` only when the gradients (and the ``loss=`` extra arg) are all finite.

    Otherwise the update is exactly zero and ``inner``'s state (moments, schedule count) is
    left untouched, so a single bad batch never reaches the weights; the skip is counted in
    :class:`SkipNonFiniteState`. Like ``optax.apply_if_finite`` but also checks the loss and
    never gives up after a number of consecutive failures (the loop decides what to do).
    """

    def init_fn(params):
        # Distinct buffers per field: a jitted step may donate the state, and donating one
        # buffer twice is an error.
        return SkipNonFiniteState(
            inner.init(params),
            jnp.zeros([], jnp.int32),
            jnp.zeros([], jnp.int32),
            jnp.ones([], jnp.bool_),
        )

    def update_fn(updates, state, params=None, *, loss=None, **extra):
        del extra
        ok = _all_finite(updates)
        if loss is not None:
            ok = jnp.logical_and(ok, jnp.all(jnp.isfinite(loss)))
        # Sanitise before the inner update so NaNs cannot leak through arithmetic (0 * NaN).
        safe = jax.tree.map(lambda g: jnp.where(ok, g, jnp.zeros_like(g)), updates)
        new_updates, new_inner = inner.update(safe, state.inner, params)
        new_updates = jax.tree.map(lambda u: jnp.where(ok, u, jnp.zeros_like(u)), new_updates)
        new_inner = jax.tree.map(lambda n, o: jnp.where(ok, n, o), new_inner, state.inner)
        skipped = jnp.logical_not(ok).astype(jnp.int32)
        return new_updates, SkipNonFiniteState(
            new_inner,
            state.total_skipped + skipped,
            jnp.where(ok, 0, state.consecutive_skipped + 1).astype(jnp.int32),
            ok,
        )

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def nonfinite_stats(opt_state: Any) -> dict[str, jax.Array]:
    """Counts for logging from the state of :func:`skip_nonfinite` (or an optimizer built by
    :func:`build_optimizer`): ``optim/skipped_total``, ``optim/skipped_consecutive``,
    ``optim/update_applied``."""
    if not isinstance(opt_state, SkipNonFiniteState):
        raise TypeError("opt_state does not come from skip_nonfinite / build_optimizer")
    return {
        "optim/skipped_total": opt_state.total_skipped,
        "optim/skipped_consecutive": opt_state.consecutive_skipped,
        "optim/update_applied": opt_state.last_finite,
    }


# ---------------------------------------------------------------------------------------------
# The full optimiser.


class Optimizer(NamedTuple):
    """``tx``: the transformation; ``schedule``: step -> learning rate (for logging);
    ``trainable``: the per-leaf spec; ``num_trainable``: trainable scalars."""

    tx: optax.GradientTransformationExtraArgs
    schedule: optax.Schedule
    trainable: Any
    num_trainable: int


def _default_decay_mask(params: Any) -> Any:
    # Weight decay on matrices only: biases, norm scales and other vectors are exempt
    # (the usual AdamW practice; see the GPT-2 / nanoGPT parameter groups).
    leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    mask = [
        np.ndim(x) >= 2 and not re.search(r"norm|bias|scale", path_str(p).lower())
        for p, x in leaves
    ]
    return jax.tree_util.tree_unflatten(treedef, mask)


def build_optimizer(cfg: Any, params: Any, *, total_steps: int | None = None) -> Optimizer:
    """AdamW with warm-up + cosine/constant LR, global-norm clipping, a trainable subset and
    non-finite skipping, from an ``optim`` config group (see the module docstring).

    Args:
      cfg: ``ConfigDict`` / object with the fields listed in the module docstring.
      params: the parameter pytree the optimiser will update (shapes and paths are read).
      total_steps: number of optimiser updates for the cosine schedule (default
        ``cfg.total_steps``); with several updates per RL step pass RL steps x updates.
    """

    def get(name: str, default: Any) -> Any:
        if hasattr(cfg, "get"):
            return cfg.get(name, default)
        return getattr(cfg, name, default)

    schedule = make_schedule(
        get("learning_rate", None),
        schedule=get("schedule", "constant"),
        warmup_steps=get("warmup_steps", 0),
        total_steps=total_steps if total_steps is not None else get("total_steps", None),
        end_lr_ratio=get("end_lr_ratio", 0.0),
    )
    spec = trainable_spec(
        params,
        get("trainable", "all"),
        last_k=get("last_k", 1),
        regex=get("trainable_regex", ""),
        layers_regex=get("layers_regex", r"(^|/)layers(/|$)"),
        also_train_regex=get("also_train_regex", ""),
    )
    decay_regex = get("decay_regex", "")
    if decay_regex:
        pat = re.compile(decay_regex)
        decay_full = jax.tree_util.tree_unflatten(
            jax.tree.structure(params), [bool(pat.search(p)) for p in leaf_paths(params)]
        )
    else:
        decay_full = _default_decay_mask(params)
    # The inner optimiser sees the selected dict: build its decay mask in the same layout.
    specs = jax.tree.structure(params).flatten_up_to(spec)
    decay_leaves = jax.tree.structure(params).flatten_up_to(decay_full)
    decay_mask = {
        f"{i:05d}": bool(d)
        for i, (s, d) in enumerate(zip(specs, decay_leaves, strict=True))
        if s is not False
    }
    parts = []
    # Experiment configs call it ``grad_clip``; ``max_grad_norm`` (the older name) wins when
    # both are set. 0 (or None) turns clipping off.
    max_norm = get("max_grad_norm", None)
    if max_norm is None:
        max_norm = get("grad_clip", 1.0)
    if max_norm and max_norm > 0:
        parts.append(optax.clip_by_global_norm(max_norm))
    parts.append(
        optax.adamw(
            schedule,
            b1=get("b1", 0.9),
            b2=get("b2", 0.999),
            eps=get("eps", 1e-8),
            weight_decay=get("weight_decay", 0.0),
            mask=decay_mask,
        )
    )
    tx = skip_nonfinite(trainable_subset(optax.chain(*parts), spec))
    return Optimizer(tx, schedule, spec, num_trainable(params, spec))


def learning_rate(opt: Optimizer, opt_state: SkipNonFiniteState) -> jax.Array:
    """Learning rate of the next applied update (reads optax's step counter)."""
    counts = [
        s.count
        for s in jax.tree.leaves(
            opt_state, is_leaf=lambda x: isinstance(x, optax.ScaleByScheduleState)
        )
        if isinstance(s, optax.ScaleByScheduleState)
    ]
    return opt.schedule(counts[0] if counts else 0)


__all__: list[str] = [
    "Optimizer",
    "SkipNonFiniteState",
    "build_optimizer",
    "learning_rate",
    "leaf_paths",
    "make_schedule",
    "nonfinite_stats",
    "num_trainable",
    "path_str",
    "skip_nonfinite",
    "trainable_spec",
    "trainable_subset",
]
