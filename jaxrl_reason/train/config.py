"""Experiment configs: Python files with ``get_config() -> ml_collections.ConfigDict``.

The JAX convention (flax examples, big_vision): a config is code, so it can compute derived
values and share pieces; the command line overrides leaves with ``--config.key=value``. Every
override is parsed against the type of the default it replaces and the whole config is
validated *before* anything compiles, so a typo costs a second, not a compilation.

A launcher does::

    args = parse_flags(sys.argv[1:])           # --config PATH --workdir DIR [--resume] ...
    config = load_config(args.config, args.overrides)
    validate(config, num_devices=jax.device_count())
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import difflib
import importlib.util
import json
import math
import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any

# Keys every experiment config defines.
COMMON_KEYS: tuple[str, ...] = ("seed", "total_steps", "eval_every", "checkpoint_every")

_TRUE = ("1", "true", "yes", "on")
_PLACEHOLDER_DEFAULTS = {bool: False, int: 0, float: 0.0, str: ""}
_FALSE = ("0", "false", "no", "off")


class ConfigError(ValueError):
    """A config or override that cannot run; the message names the field and the fix."""


def _config_dict_cls():
    import ml_collections

    return ml_collections.ConfigDict


def load_config_file(path: str | os.PathLike):
    """Imports a Python config file and returns its ``get_config()``.

    ``path`` may end in ``:ARG`` (``configs/x.py:small``), passed as ``get_config("small")``,
    the ``ml_collections.config_flags`` convention for config variants.
    """
    path = os.fspath(path)
    arg = None
    if ":" in os.path.basename(path):
        path, arg = path.rsplit(":", 1)
    if not os.path.isfile(path):
        raise ConfigError(f"--config {path}: no such file")
    name = "_jaxrl_config_" + os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ConfigError(f"--config {path}: the file must define get_config()")
    config = module.get_config() if arg is None else module.get_config(arg)
    if not isinstance(config, _config_dict_cls()):
        raise ConfigError(
            f"--config {path}: get_config() returned {type(config).__name__}, "
            "expected ml_collections.ConfigDict"
        )
    return config


def _leaf_paths(config, prefix: str = "") -> list[str]:
    cd = _config_dict_cls()
    out = []
    for key in config.keys():
        value = config[key]
        path = f"{prefix}{key}"
        if isinstance(value, cd):
            out.append(path)
            out.extend(_leaf_paths(value, path + "."))
        else:
            out.append(path)
    return out


def _unknown_key_error(config, key: str, missing: str) -> ConfigError:
    paths = _leaf_paths(config)
    close = difflib.get_close_matches(key, paths, n=3, cutoff=0.6)
    if not close:  # a typo in the last part only: compare leaf names
        leaf = key.rsplit(".", 1)[-1]
        close = [p for p in paths if difflib.get_close_matches(leaf, [p.rsplit(".", 1)[-1]])][:3]
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return ConfigError(f"--config.{key}: unknown key {missing!r}{hint}")


def parse_value(field: str, text: str, default: Any) -> Any:
    """Parses the override ``text`` for ``field`` as the type of its ``default``.

    Rules: ``bool`` accepts true/false/1/0/yes/no/on/off; ``int`` rejects fractions; ``float``
    accepts ints; ``str`` takes the text as is; ``tuple`` / ``list`` parse a Python literal
    (``"(1,2)"``, ``"[a, b]"`` of bare words becomes strings) and check each element against
    the default's element type; a ``None`` default takes a Python literal or the raw string.

    Raises:
      ConfigError: naming the field, the value and the expected type.
    """

    def bad(expected: str) -> ConfigError:
        return ConfigError(f"--config.{field}={text!r}: expected {expected}")

    if isinstance(default, bool):
        low = text.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise bad("a bool (true/false)")
    if isinstance(default, int):
        try:
            return int(text.strip().replace("_", ""))
        except ValueError:
            raise bad("an int") from None
    if isinstance(default, float):
        try:
            return float(text)
        except ValueError:
            raise bad("a float") from None
    if isinstance(default, str):
        return text
    if isinstance(default, tuple | list):
        body = text.strip()
        try:
            value = ast.literal_eval(body)
        except (ValueError, SyntaxError):
            inner = body.strip("()[]")
            value = [v.strip() for v in inner.split(",") if v.strip()]
        if not isinstance(value, tuple | list):
            value = [value]
        if default:
            elem = default[0]
            try:
                value = [
                    parse_value(f"{field}[{i}]", str(v), elem) if isinstance(v, str) else v
                    for i, v in enumerate(value)
                ]
            except ConfigError:
                raise bad(f"a sequence of {type(elem).__name__}") from None
            for v in value:
                ok = isinstance(v, type(elem)) or (
                    isinstance(elem, float) and isinstance(v, int) and not isinstance(v, bool)
                )
                if not ok:
                    raise bad(f"a sequence of {type(elem).__name__}")
        return type(default)(value)
    if default is None:
        try:
            return ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return text
    raise bad(f"a value of type {type(default).__name__} (set it in the config file)")


def apply_override(config, key: str, text: str) -> None:
    """Sets ``config.<key>`` (dotted) from the string ``text``, type-checked (in place)."""
    cd = _config_dict_cls()
    parts = key.split(".")
    node = config
    for i, part in enumerate(parts):
        if part not in node:
            raise _unknown_key_error(config, key, ".".join(parts[: i + 1]))
        if i < len(parts) - 1:
            node = node[part]
            if not isinstance(node, cd):
                raise ConfigError(
                    f"--config.{key}: {'.'.join(parts[: i + 1])} is a value, not a group"
                )
    leaf = parts[-1]
    default = node[leaf]
    if default is None:
        # A typed placeholder (``config_dict.placeholder(int)``) is None until set: parse as
        # its declared type; "None" keeps it unset.
        declared = node.get_type(leaf)
        if text.strip() == "None":
            with node.unlocked():
                node[leaf] = None
            return
        if declared in _PLACEHOLDER_DEFAULTS:
            default = _PLACEHOLDER_DEFAULTS[declared]
    if isinstance(default, cd):
        raise ConfigError(
            f"--config.{key}: is a group of settings; set one of its fields, e.g. "
            f"--config.{key}.{next(iter(default.keys()), 'x')}=..."
        )
    value = parse_value(key, text, default)
    with node.unlocked():
        node[leaf] = value


def split_override(arg: str) -> tuple[str, str]:
    """``"--config.a.b=3"`` / ``"config.a.b=3"`` / ``"a.b=3"`` -> ``("a.b", "3")``."""
    body = arg[2:] if arg.startswith("--") else arg
    if body.startswith("config."):
        body = body[len("config.") :]
    if "=" not in body:
        raise ConfigError(f"override {arg!r}: expected --config.KEY=VALUE")
    key, value = body.split("=", 1)
    if not key:
        raise ConfigError(f"override {arg!r}: empty key")
    return key, value


def load_config(
    path: str | os.PathLike, overrides: Iterable[str] = (), *, validate_config: bool = True
):
    """Loads a config file, applies ``--config.key=value`` overrides and validates.

    Args:
      path: a Python file defining ``get_config()`` (optionally ``path:arg``).
      overrides: strings ``--config.a.b=value`` (the ``--config.`` prefix is optional).
      validate_config: run :func:`validate` (without a device count; call it again with
        ``num_devices`` once JAX is up to check the mesh).

    Returns:
      The ``ConfigDict``, locked (so later attribute typos raise instead of adding keys).
    """
    config = load_config_file(path)
    for arg in overrides:
        key, value = split_override(arg)
        apply_override(config, key, value)
    if validate_config:
        validate(config)
    config.lock()
    return config


# ---------------------------------------------------------------------------------------------
# Validation: cross-field rules, run before anything compiles.

_VALIDATORS: list[Callable[..., None]] = []


def register_validator(fn: Callable[..., None]) -> Callable[..., None]:
    """Adds ``fn(config, num_devices: int | None)`` to the rules :func:`validate` runs.

    A validator raises :class:`ConfigError` naming the field(s) and the fix; it must skip
    quietly when the fields it checks are absent (configs differ in what they contain).
    """
    _VALIDATORS.append(fn)
    return fn


def _has(config, dotted: str) -> bool:
    node = config
    for part in dotted.split("."):
        if not hasattr(node, "keys") or part not in node:
            return False
        node = node[part]
    return True


def _get(config, dotted: str) -> Any:
    node = config
    for part in dotted.split("."):
        node = node[part]
    return node


@register_validator
def _check_common_keys(config, num_devices):
    for key in COMMON_KEYS:
        if key not in config:
            raise ConfigError(f"config.{key} is missing: every experiment config must set it")
        value = config[key]
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config.{key}={value!r}: expected an int")
        if value < 0:
            raise ConfigError(f"config.{key}={value}: must be >= 0")
    if config.total_steps < 1:
        raise ConfigError(f"config.total_steps={config.total_steps}: must be >= 1")


@register_validator
def _check_remat(config, num_devices):
    """``train.remat``: the per-layer rematerialisation policy of the training forward."""
    _require(
        config,
        "train.remat",
        lambda v: v in ("auto", "none", "dots", "full"),
        "'auto', 'none', 'dots' or 'full' (what the backward pass keeps of each decoder layer)",
        "set --config.train.remat=dots to recompute elementwise work and save memory",
    )


@register_validator
def _check_model_dtypes(config, num_devices):
    """``model.dtype`` (compute: ``auto`` = bf16 on GPU / TPU, f32 on CPU) and
    ``model.param_dtype`` (storage of the master weights and the optimiser state)."""
    _require(
        config,
        "model.dtype",
        lambda v: v in ("auto", "float32", "bfloat16"),
        "'auto', 'float32' or 'bfloat16' (the compute dtype)",
        "set --config.model.dtype=auto (bf16 on GPU / TPU, f32 on CPU)",
    )
    _require(
        config,
        "model.param_dtype",
        lambda v: v in ("float32", "bfloat16"),
        "'float32' or 'bfloat16' (the master weights' dtype)",
        "set --config.model.param_dtype=float32 for mixed precision",
    )


@register_validator
def _check_batch_division(config, num_devices):
    if not (_has(config, "rollout.batch_prompts") and _has(config, "rollout.n_samples")):
        return
    rollouts = config.rollout.batch_prompts * config.rollout.n_samples
    if rollouts < 1:
        raise ConfigError(f"rollout.batch_prompts * rollout.n_samples = {rollouts}: must be >= 1")
    for key in ("train.micro_batch_size", "train.mini_batch_size"):
        if _has(config, key):
            size = _get(config, key)
            if size < 1 or rollouts % size:
                raise ConfigError(
                    f"{key}={size} must divide rollout.batch_prompts * rollout.n_samples = "
                    f"{config.rollout.batch_prompts} * {config.rollout.n_samples} = {rollouts}"
                )
    if _has(config, "train.micro_batch_size") and _has(config, "train.mini_batch_size"):
        micro, mini = config.train.micro_batch_size, config.train.mini_batch_size
        if mini % micro:
            raise ConfigError(
                f"train.micro_batch_size={micro} must divide train.mini_batch_size={mini}"
            )


@register_validator
def _check_mesh(config, num_devices):
    if "mesh" not in config:
        return
    from jaxrl_reason.parallel.mesh import MeshConfigError, resolve_mesh_shape

    try:
        if num_devices is None:
            # Without a device count, still check each size and the single -1.
            sizes = [config.mesh.get(a, 1) for a in ("data", "fsdp", "tensor")]
            ok = [s for s in sizes if isinstance(s, int) and not isinstance(s, bool) and s > 0]
            resolve_mesh_shape(config.mesh, math.prod(ok))
        else:
            shape = resolve_mesh_shape(config.mesh, num_devices)
            data_ways = shape[0] * shape[1]
            if _has(config, "train.micro_batch_size"):
                micro = config.train.micro_batch_size
                if micro % data_ways:
                    raise ConfigError(
                        f"train.micro_batch_size={micro} must be divisible by mesh.data * "
                        f"mesh.fsdp = {data_ways} (each device gets a whole share of a batch)"
                    )
    except MeshConfigError as e:
        raise ConfigError(str(e)) from None


def validate(config, *, num_devices: int | None = None) -> None:
    """Runs every registered cross-field rule; raises :class:`ConfigError` on the first.

    Args:
      config: the experiment ``ConfigDict``.
      num_devices: ``jax.device_count()`` when known: enables the mesh-covers-devices and
        batch-splits-over-devices checks (querying devices does not compile anything).
    """
    for fn in _VALIDATORS:
        fn(config, num_devices)


def to_json_dict(config) -> dict:
    """Plain JSON-serialisable dict of a ConfigDict (tuples become lists)."""
    return json.loads(config.to_json_best_effort())


# ---------------------------------------------------------------------------------------------
# Launcher flags.


@dataclasses.dataclass(frozen=True)
class LaunchArgs:
    """Parsed launcher flags: ``--config PATH --workdir DIR [--resume] [--print-config]
    [--config.x=y ...]`` (``--workdir`` may be omitted with ``--print-config``)."""

    config: str
    workdir: str | None
    resume: bool
    overrides: tuple[str, ...]
    print_config: bool = False
    overwrite: bool = False


def parse_flags(argv: Sequence[str], *, prog: str | None = None) -> LaunchArgs:
    """Parses launcher flags. ``--config.x y`` (space separated) is accepted too.

    Raises:
      SystemExit (argparse) for missing ``--config`` / ``--workdir`` or unknown flags.
    """
    parser = argparse.ArgumentParser(prog=prog, allow_abbrev=False)
    parser.add_argument("--config", required=True, help="Python config file (get_config())")
    parser.add_argument("--workdir", help="run directory (logs, checkpoints)")
    parser.add_argument("--resume", action="store_true", help="continue from the last save")
    parser.add_argument(
        "--print-config",
        action="store_true",
        help="validate, print the resolved config as JSON and exit (loads no model)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="start afresh in a workdir that holds a run (deletes its metrics and checkpoints)",
    )
    args, rest = parser.parse_known_args(list(argv))
    overrides, unknown = [], []
    i = 0
    while i < len(rest):
        arg = rest[i]
        if arg.startswith("--config."):
            if "=" not in arg and i + 1 < len(rest) and not rest[i + 1].startswith("--"):
                arg = f"{arg}={rest[i + 1]}"
                i += 1
            overrides.append(arg)
        else:
            unknown.append(arg)
        i += 1
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)} (overrides: --config.KEY=VALUE)")
    if args.workdir is None and not args.print_config:
        parser.error("the following arguments are required: --workdir")
    if args.resume and args.overwrite:
        parser.error("--resume and --overwrite exclude each other")
    return LaunchArgs(
        args.config,
        args.workdir,
        args.resume,
        tuple(overrides),
        bool(args.print_config),
        bool(args.overwrite),
    )


@register_validator
def _check_eval(config, num_devices):
    """``eval.*`` settings (k <= n for pass@k, a positive temperature) before compiling."""
    if "eval" not in config or not _has(config, "eval.ks"):
        return
    from jaxrl_reason.eval.runner import validate_eval

    try:
        validate_eval(
            greedy=bool(config.eval.get("greedy", True)),
            n_samples=int(config.eval.get("n_samples", 0)),
            ks=tuple(config.eval.ks),
            temperature=float(config.eval.get("temperature", 1.0)),
        )
    except ValueError as e:
        raise ConfigError(str(e)) from None


def eval_kwargs_from_config(config: Any) -> dict[str, Any]:
    """Keyword arguments of :func:`evaluate_policy` from an experiment config (validated).

    Reads ``config.eval.{batch_prompts, n_samples, ks, temperature}`` and the optional
    ``eval.max_new_tokens`` / ``eval.top_p`` (default: ``config.rollout.max_new_tokens`` and
    1.0, i.e. the untruncated distribution whose pass@k the literature reports).

    Raises:
      ConfigError: a bad ``eval.*`` field (before any compilation).
    """
    from jaxrl_reason.eval.runner import validate_eval

    ev = config.eval
    max_new = ev.get("max_new_tokens", 0) or config.rollout.max_new_tokens
    kw = dict(
        max_new_tokens=int(max_new),
        batch_prompts=int(ev.get("batch_prompts", 32)),
        greedy=bool(ev.get("greedy", True)),
        n_samples=int(ev.get("n_samples", 0)),
        ks=tuple(int(k) for k in ev.get("ks", (1,))),
        temperature=float(ev.get("temperature", 1.0)),
        top_p=float(ev.get("top_p", 1.0)),
    )
    try:
        validate_eval(
            greedy=kw["greedy"],
            n_samples=kw["n_samples"],
            ks=kw["ks"],
            temperature=kw["temperature"],
        )
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if kw["batch_prompts"] < 1:
        raise ConfigError(f"eval.batch_prompts={kw['batch_prompts']}: must be >= 1")
    if kw["max_new_tokens"] < 1:
        raise ConfigError(f"eval.max_new_tokens / rollout.max_new_tokens={max_new}: must be >= 1")
    return kw


def available_fields(config) -> dict[str, str]:
    """The optional ``Trajectories`` fields a config's run fills, each with who fills it.

    Sources: the rollout strategy's ``supplies``; reward components with a non-zero weight
    or named by ``reward.step_scorer``; the trainer (``ref_logprobs`` always, ``values`` with
    ``algo.value_head``, ``process_rewards`` with ``implicit_prm.online``). Unknown strategies /
    components contribute nothing here (their own validators name them).
    """
    from jaxrl_reason.rewards.registry import get_reward
    from jaxrl_reason.rollout import strategies

    out = {"ref_logprobs": "the trainer's reference policy"}
    if _has(config, "algo.value_head") and config.algo.value_head:
        out["values"] = "algo.value_head=True"
    if _has(config, "implicit_prm.online") and config.implicit_prm.online:
        out["process_rewards"] = "implicit_prm.online=True (the online implicit PRM)"
    name = config.rollout.get("strategy", "group") if "rollout" in config else "group"
    if name in strategies.strategy_names():
        for f in strategies.get_strategy(name).supplies:
            out[f] = f"rollout.strategy={name!r}"
        if "parent" in strategies.get_strategy(name).supplies:
            out["leaf_reward"] = f"rollout.strategy={name!r} (scored leaves)"
    if "reward" in config:
        comps = [k for k, w in config.reward.get("weights", {}).items() if w]
        if config.reward.get("step_scorer", ""):
            comps.append(config.reward.step_scorer)
        for c in comps:
            try:
                for f in get_reward(c).supplies:
                    out[f] = f"reward component {c!r}"
            except ValueError:
                pass
    return out


@register_validator
def _check_estimator_inputs(config, num_devices):
    """The estimator exists and the run fills every input it declares (before any load)."""
    if not _has(config, "algo.estimator"):
        return
    from jaxrl_reason import credit
    from jaxrl_reason.rollout import strategies
    from jaxrl_reason.rollout.trajectories import FIELD_SOURCES, REQUIRED_FIELDS

    est = config.algo.estimator
    if est not in credit.names():
        raise ConfigError(
            f"algo.estimator={est!r} is not a registered estimator; valid: "
            f"{', '.join(credit.names())}"
        )
    strategy = config.rollout.get("strategy", "group") if "rollout" in config else "group"
    known = strategy in strategies.strategy_names()
    have = available_fields(config)
    for field in credit.inputs(est).values():
        if field in REQUIRED_FIELDS or field in have:
            continue
        where = (
            f"the configured rollout.strategy={strategy!r} is not a registered strategy "
            f"(available: {', '.join(strategies.strategy_names())})"
            if not known
            else f"the configured rollout.strategy={strategy!r} and reward components do not "
            "supply it"
        )
        raise ConfigError(
            f"algo.estimator={est!r} needs the input {field!r}, supplied by "
            f"{FIELD_SOURCES.get(field, 'a rollout strategy')}; {where}"
        )
    if not known:
        raise ConfigError(
            f"rollout.strategy={strategy!r} is not a registered strategy; available: "
            f"{', '.join(strategies.strategy_names())}"
        )


# ---------------------------------------------------------------------------------------------
# Field rules that need no model: each names the field and the fix, and skips absent fields.


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _require(config, key: str, ok: Callable[[Any], bool], need: str, fix: str = "") -> None:
    """Raises ConfigError ``"<key>=<value>: must be <need>; <fix>"`` unless ``ok(value)``.

    Skips quietly when ``key`` is absent or None (an unset placeholder).
    """
    if not _has(config, key):
        return
    value = _get(config, key)
    if value is None:
        return
    try:
        good = bool(ok(value))
    except (TypeError, ValueError):
        good = False
    if not good:
        fix = fix or f"set --config.{key}=..."
        raise ConfigError(f"{key}={value!r}: must be {need}; {fix}")


@register_validator
def _check_train_and_checkpoints(config, num_devices):
    _require(config, "train.ppo_epochs", lambda v: _is_int(v) and v >= 1, "an int >= 1")
    _require(
        config,
        "max_checkpoints",
        lambda v: _is_int(v) and v >= 1,
        "an int >= 1 (how many recent checkpoints to keep)",
        "0 would delete every save; set --config.max_checkpoints=2",
    )
    _require(
        config,
        "train.token_budget",
        lambda v: isinstance(v, int | float) and not isinstance(v, bool) and v >= 0,
        "a number >= 0 (0: no budget; else stop after this many generated tokens)",
    )
    _require(
        config,
        "train.time_budget_s",
        lambda v: isinstance(v, int | float) and not isinstance(v, bool) and v >= 0,
        "a number >= 0 (0: no budget; else stop after this many seconds of training steps)",
    )


@register_validator
def _check_dynamic_sampling(config, num_devices):
    """``rollout.dynamic_sampling`` (DAPO): a bool, its metric, its round cap, and a strategy
    whose rows can be regrouped (one row per sample: ``group``)."""
    if not _has(config, "rollout.dynamic_sampling"):
        return
    _require(config, "rollout.dynamic_sampling", lambda v: isinstance(v, bool), "True or False")
    if not config.rollout.dynamic_sampling:
        return
    _require(
        config,
        "rollout.dynamic_metric",
        lambda v: v in ("acc", "reward"),
        "'acc' (the verifier, DAPO's default) or 'reward' (the weighted total)",
    )
    _require(
        config,
        "rollout.max_resample_rounds",
        lambda v: _is_int(v) and v >= 0,
        "an int >= 0 (extra sampling rounds per step)",
    )
    strategy = config.rollout.get("strategy", "group")
    if strategy != "group":
        raise ConfigError(
            f"rollout.dynamic_sampling=True needs rollout.strategy='group' (got {strategy!r}): "
            "tree forests and environment anchors are per batch and cannot be regrouped; "
            "set --config.rollout.dynamic_sampling=False"
        )
    if int(config.get("prof", {}).get("n_remove", 0) or 0) > 0:
        raise ConfigError(
            f"rollout.dynamic_sampling=True with prof.n_remove={config.prof.n_remove}: PROF "
            "filters only the first sampling round; set --config.prof.n_remove=0 or "
            "--config.rollout.dynamic_sampling=False"
        )


@register_validator
def _check_curriculum(config, num_devices):
    """``curriculum.*`` (the replay buffer of :mod:`jaxrl_reason.data.curriculum`): its
    sizes, and that a batch really replays a prompt and the run trains on the verifier whose
    pass rate ranks the prompts."""
    if not _has(config, "curriculum.enabled"):
        return
    _require(config, "curriculum.enabled", lambda v: isinstance(v, bool), "True or False")
    if not config.curriculum.enabled:
        return
    _require(
        config,
        "curriculum.replay_fraction",
        lambda v: _is_number(v) and 0 <= v < 1,
        "in [0, 1) (the share of each batch drawn from the buffer; the rest is fresh)",
        "e.g. --config.curriculum.replay_fraction=0.5",
    )
    _require(config, "curriculum.capacity", lambda v: _is_int(v) and v >= 1, "an int >= 1")
    _require(
        config,
        "curriculum.ema",
        lambda v: _is_number(v) and 0 < v <= 1,
        "in (0, 1] (the weight of a new group's pass rate; 1 keeps only the last)",
    )
    _require(
        config,
        "curriculum.max_visits",
        lambda v: _is_int(v) and v >= 1,
        "an int >= 1 (groups rolled out per prompt before it retires)",
    )
    frac = float(config.curriculum.get("replay_fraction", 0.5))
    batch = int(config.rollout.get("batch_prompts", 1)) if "rollout" in config else 1
    if math.floor(frac * batch) < 1:
        raise ConfigError(
            f"curriculum.replay_fraction={frac} with rollout.batch_prompts={batch} replays "
            f"floor({frac} * {batch}) = 0 prompts per step; raise replay_fraction to >= "
            f"{1 / batch:g} or set --config.curriculum.enabled=False"
        )
    weights = config.reward.get("weights", {}) if "reward" in config else {}
    if not float(weights.get("correct", 0.0)):
        raise ConfigError(
            "curriculum.enabled=True with reward.weights.correct=0: the buffer ranks prompts "
            "by the verifier's pass rate, which a run not trained on the verifier (TTRL, "
            "EMPO: label-free) must not see; set --config.curriculum.enabled=False"
        )


@register_validator
def _check_optim(config, num_devices):
    if "optim" not in config:
        return
    from jaxrl_reason.train.optim import SCHEDULES, TRAINABLE_MODES

    _require(
        config,
        "optim.learning_rate",
        lambda v: _is_number(v) and v > 0,
        "a finite number > 0",
        "e.g. --config.optim.learning_rate=1e-6",
    )
    for key in ("optim.grad_clip", "optim.max_grad_norm"):
        _require(
            config,
            key,
            lambda v: _is_number(v) and v >= 0,
            "a finite number >= 0 (the global-norm clip; 0 turns clipping off)",
        )
    for key in ("optim.b1", "optim.b2"):
        _require(
            config,
            key,
            lambda v: _is_number(v) and 0 <= v < 1,
            "in [0, 1) (an Adam moment decay)",
            f"e.g. --config.{key}={0.9 if key.endswith('b1') else 0.99}",
        )
    _require(config, "optim.weight_decay", lambda v: _is_number(v) and v >= 0, "finite and >= 0")
    _require(config, "optim.eps", lambda v: _is_number(v) and v > 0, "a finite number > 0")
    _require(config, "optim.end_lr_ratio", lambda v: _is_number(v) and 0 <= v <= 1, "in [0, 1]")
    _require(
        config,
        "optim.schedule",
        lambda v: v in SCHEDULES,
        f"one of {SCHEDULES}",
        "set --config.optim.schedule=constant (or cosine)",
    )
    _require(config, "optim.warmup_steps", lambda v: _is_int(v) and v >= 0, "an int >= 0")
    _require(
        config,
        "optim.trainable",
        lambda v: v in TRAINABLE_MODES,
        f"one of {TRAINABLE_MODES}",
        "set --config.optim.trainable=all (or last_k with optim.last_k, or regex)",
    )
    mode = config.optim.get("trainable", "all")
    if mode == "last_k":
        # The layer count is the model's; here only the lower bound can be checked.
        _require(
            config,
            "optim.last_k",
            lambda v: _is_int(v) and v >= 1,
            "an int >= 1 (how many final layers train) with optim.trainable='last_k'",
        )
    if mode == "regex" and _has(config, "optim.trainable_regex"):
        _require(
            config,
            "optim.trainable_regex",
            lambda v: bool(v) and _re_compiles(v),
            "a non-empty regular expression with optim.trainable='regex'",
        )


def _re_compiles(pattern: str) -> bool:
    """Whether ``pattern`` is a valid regular expression."""
    import re

    try:
        re.compile(pattern)
    except re.error:
        return False
    return True


@register_validator
def _check_rollout_sampling(config, num_devices):
    from jaxrl_reason.rollout.sampler import DECODE_LAYERS

    _require(
        config,
        "rollout.temperature",
        lambda v: _is_number(v) and v > 0,
        "a finite number > 0 (the rollout samples from softmax(logits / T))",
        "e.g. --config.rollout.temperature=1.0",
    )
    _require(config, "rollout.max_new_tokens", lambda v: _is_int(v) and v >= 1, "an int >= 1")
    _require(
        config,
        "rollout.top_p",
        lambda v: _is_number(v) and 0 < v <= 1,
        "in (0, 1] (1.0 = no nucleus truncation)",
    )
    _require(config, "rollout.top_k", lambda v: _is_int(v) and v >= 0, "an int >= 0 (0 = off)")
    _require(
        config,
        "rollout.decode_layers",
        lambda v: v in DECODE_LAYERS,
        "'scan' (default), 'unrolled' (per-layer weights; faster small-batch decode on CPU) "
        "or 'auto' (unrolled on CPU only)",
    )
    for key in ("rollout.n_samples", "rollout.batch_prompts"):
        _require(config, key, lambda v: _is_int(v) and v >= 1, "an int >= 1")


@register_validator
def _check_task(config, num_devices):
    if not _has(config, "task.name"):
        return
    import jaxrl_reason.envs  # noqa: F401  (registers the agent tasks)
    from jaxrl_reason.data import TASKS
    from jaxrl_reason.data.build import GSM8K_SOURCES, task_names

    known = tuple(dict.fromkeys((*TASKS, *task_names())))
    _require(config, "task.name", lambda v: v in known, f"one of {known}")
    _require(
        config,
        "task.source",
        lambda v: v in GSM8K_SOURCES,
        f"one of {GSM8K_SOURCES} ('local': task.data_dir; 'tfds': an explicit download)",
    )
    if config.task.name == "arithmetic":
        from jaxrl_reason.data.arithmetic import _OPS

        for key in ("task.low", "task.high"):
            _require(config, key, _is_int, "an int")
        if _has(config, "task.low") and _has(config, "task.high"):
            low, high = config.task.low, config.task.high
            if low > high:
                raise ConfigError(
                    f"task.low={low} > task.high={high}: the operand range is empty; "
                    "set task.low <= task.high"
                )
        ops_ok = lambda v: (
            len(tuple(v)) > 0 and set(tuple(v)) <= set(_OPS) and len(set(tuple(v))) == len(tuple(v))
        )
        _require(
            config,
            "task.ops",
            ops_ok,
            f"a non-empty, duplicate-free selection of {''.join(_OPS)!r}",
            'e.g. --config.task.ops="+-"',
        )


@register_validator
def _check_reward_components(config, num_devices):
    """Reward weights name registered components; the step scorer fills step fields and its
    task has what it needs (``oracle_steps`` needs oracle step labels)."""
    if "reward" not in config:
        return
    from jaxrl_reason.rewards.registry import get_reward, reward_names

    names = set(reward_names())
    for k in config.reward.get("weights", {}).keys():
        if k not in names:
            raise ConfigError(
                f"reward.weights.{k}: no reward component {k!r}; registered: "
                f"{', '.join(sorted(names))}"
            )
    scorer = config.reward.get("step_scorer", "")
    if scorer:
        if scorer not in names or not get_reward(scorer).supplies:
            step_scorers = sorted(n for n in names if get_reward(n).supplies)
            raise ConfigError(
                f"reward.step_scorer={scorer!r}: use '' or a step scorer: {', '.join(step_scorers)}"
            )
    uses_oracle = scorer == "oracle_steps" or config.reward.weights.get("oracle_steps", 0)
    if uses_oracle and _has(config, "task.name"):
        from jaxrl_reason.data import TASKS

        cls = TASKS.get(config.task.name)
        if cls is not None and not hasattr(cls, "step_labels"):
            raise ConfigError(
                f"reward component 'oracle_steps' needs a task with oracle step labels; "
                f"task.name={config.task.name!r} has none (use task.name='arith_chain')"
            )


@register_validator
def _check_steps(config, num_devices):
    """``rollout.step_rule`` is a known rule and ``rollout.max_steps >= 1``."""
    if "rollout" not in config:
        return
    from jaxrl_reason.rollout.steps import RESPONSE_RULES

    rule = config.rollout.get("step_rule", "auto")
    if rule not in RESPONSE_RULES:
        raise ConfigError(f"rollout.step_rule={rule!r}: use one of {', '.join(RESPONSE_RULES)}")
    if int(config.rollout.get("max_steps", 8)) < 1:
        raise ConfigError(f"rollout.max_steps={config.rollout.max_steps}: must be >= 1")


@register_validator
def _check_loss(config, num_devices):
    if "loss" not in config:
        return
    from jaxrl_reason.losses.aggregation import AGG_MODES
    from jaxrl_reason.losses.policy import LOSS_TYPES
    from jaxrl_reason.losses.regularizers import KL_KINDS

    _require(config, "loss.loss_type", lambda v: v in LOSS_TYPES, f"one of {LOSS_TYPES}")
    _require(config, "loss.agg_mode", lambda v: v in AGG_MODES, f"one of {AGG_MODES}")
    _require(
        config,
        "loss.kl_kind",
        lambda v: v in KL_KINDS,
        f"one of {KL_KINDS} (k1 = kl, k2 = mse, k3 = low_var_kl)",
    )
    for key in ("loss.clip_low", "loss.clip_high"):
        _require(config, key, lambda v: _is_number(v) and v >= 0, "a finite number >= 0")
    _require(
        config,
        "loss.dual_clip",
        lambda v: _is_number(v) and (v == 0 or v > 1),
        "0 (off) or > 1 (verl's clip_ratio_c, e.g. 3.0)",
    )
    if config.loss.get("dual_clip", 0) and config.loss.get("loss_type", "ppo") == "gspo":
        raise ConfigError(
            f"loss.dual_clip={config.loss.dual_clip!r} with loss.loss_type='gspo': the dual "
            "clip is only defined for ppo; set --config.loss.dual_clip=0"
        )
    for key in ("loss.kl_coef", "loss.entropy_coef", "loss.vf_coef"):
        _require(config, key, _is_number, "a finite number")


@register_validator
def _check_eval_sizes(config, num_devices):
    if "eval" not in config:
        return
    if config.get("eval_every", 0):
        _require(
            config,
            "eval.num_prompts",
            lambda v: _is_int(v) and v >= 1,
            "an int >= 1 when eval_every > 0",
            "set it, or --config.eval_every=0 to skip evaluation",
        )
    _require(config, "eval.batch_prompts", lambda v: _is_int(v) and v >= 1, "an int >= 1")


@register_validator
def _check_env_rollout(config, num_devices):
    """``rollout.strategy="env"``: the environment, its budgets and a task it can run."""
    if not _has(config, "rollout.strategy") or config.rollout.strategy != "env":
        return
    from jaxrl_reason.rollout.multiturn import ENV_NAMES

    if not _has(config, "rollout.env"):
        raise ConfigError(
            "rollout.strategy='env' needs the rollout.env fields (name, max_turns, "
            "max_turn_tokens, max_obs_tokens, ...): start from experiments/configs/common.py"
        )
    _require(config, "rollout.env.name", lambda v: v in ENV_NAMES, f"one of {ENV_NAMES}")
    for key in ("max_turns", "max_turn_tokens", "max_obs_tokens", "k"):
        _require(config, f"rollout.env.{key}", lambda v: _is_int(v) and v >= 1, "an int >= 1")
    _require(
        config,
        "rollout.env.invalid_action",
        lambda v: v in ("retry", "finish"),
        "'retry' (an error observation) or 'finish' (the action is the final answer)",
    )
    env = config.rollout.env
    max_steps = int(config.rollout.get("max_steps", 8))
    if env.max_turns > max_steps:
        raise ConfigError(
            f"rollout.env.max_turns={env.max_turns} > rollout.max_steps={max_steps}: the per-turn "
            f"fields (anchor_ids, turn_mask, answer_probs) hold max_steps turns; raise "
            f"--config.rollout.max_steps={env.max_turns} or lower max_turns"
        )
    if env.name == "tool":
        tools = tuple(env.get("tools", ()))
        if not tools or not set(tools) <= {"calculator", "python"}:
            raise ConfigError(
                f"rollout.env.tools={tools!r}: a non-empty selection of 'calculator', 'python'"
            )
    branch_turn, fan = int(env.get("branch_turn", -1)), int(env.get("branches", 1))
    n = int(config.rollout.get("n_samples", 1))
    if branch_turn >= 0:
        if not 0 <= branch_turn < env.max_turns - 1:
            raise ConfigError(
                f"rollout.env.branch_turn={branch_turn}: episodes branch after a turn that "
                f"another one follows; use 0..{env.max_turns - 2} (or -1 for no branching)"
            )
        if fan < 2 or n % fan:
            raise ConfigError(
                f"rollout.env.branches={fan} with rollout.n_samples={n}: branching needs >= 2 "
                "children per root and n_samples a multiple of branches (n_samples / branches "
                "roots per prompt)"
            )
    elif _has(config, "algo.estimator") and config.algo.estimator == "tree_grpo":
        raise ConfigError(
            "algo.estimator='tree_grpo' with rollout.strategy='env' needs episode trees: set "
            "--config.rollout.env.branch_turn=0 (or later) and --config.rollout.env.branches=2"
        )
    task = config.task.get("name", "") if "task" in config else ""
    if env.name == "search" and task != "multihop" and not env.get("corpus_path", ""):
        raise ConfigError(
            f"rollout.env.name='search' with task.name={task!r}: the search index is built from "
            "the multihop task's world; set --config.task.name=multihop or give "
            "rollout.env.corpus_path (a JSONL corpus)"
        )


@register_validator
def _check_tree_rollout(config, num_devices):
    """``rollout.tree`` (the shape of ``rollout.strategy = "tree"``; see rollout.tree)."""
    if not _has(config, "rollout.tree"):
        return
    _require(
        config,
        "rollout.tree.mode",
        lambda v: v in ("eptree", "segment"),
        "'eptree' (TreeRL's entropy-guided forks) or 'segment' (fork at segment ends)",
    )
    for key in ("num_chains", "fork_points", "branches", "segment_len"):
        _require(config, f"rollout.tree.{key}", lambda v: _is_int(v) and v >= 1, "an int >= 1")
    _require(config, "rollout.tree.rounds", lambda v: _is_int(v) and v >= 0, "an int >= 0")
    _require(
        config,
        "rollout.tree.branching",
        lambda v: len(v) >= 1 and all(_is_int(b) and b >= 1 for b in v),
        "a non-empty tuple of ints >= 1 (children per node at each depth)",
    )
    _require(
        config,
        "rollout.tree.fork_at",
        lambda v: v in ("tokens", "steps"),
        "'tokens' (fork every segment_len tokens) or 'steps' (fork where a reasoning step "
        "ends: a newline token, at most segment_len tokens on)",
    )
    tree = config.rollout.tree
    if tree.get("fork_at", "tokens") == "steps" and tree.get("mode") != "segment":
        raise ConfigError(
            f"rollout.tree.fork_at='steps' applies to segment trees only, but rollout.tree.mode="
            f"{tree.get('mode')!r}; set rollout.tree.mode='segment' or fork_at='tokens'"
        )
    if config.rollout.get("strategy", "group") == "tree" and _has(config, "rollout.n_samples"):
        from jaxrl_reason.rollout.tree import TreeConfig

        shape = TreeConfig.from_mapping(tree.to_dict() if hasattr(tree, "to_dict") else tree)
        if config.rollout.n_samples > shape.max_leaves():
            raise ConfigError(
                f"rollout.n_samples={config.rollout.n_samples}: the leaf budget per prompt "
                f"exceeds the tree's {shape.max_leaves()} leaves (rollout.tree: mode="
                f"{shape.mode!r}, eptree M * (1 + rounds * fork_points * branches), segment "
                "prod(branching)); grow the tree or lower rollout.n_samples"
            )


@register_validator
def _check_prm_judge_prof(config, num_devices):
    """``prm.*`` (train_prm and the ``prm`` step scorer), ``judge.*`` (CAPO's generative
    judge) and ``prof.*`` (PROF's filter): checked before any model loads."""
    if "reward" not in config:
        return
    scorer = config.reward.get("step_scorer", "")
    weights = config.reward.get("weights", {})
    uses = lambda n: scorer == n or bool(weights.get(n, 0.0))  # noqa: E731
    if _has(config, "prm"):
        _require(
            config,
            "prm.labels",
            lambda v: v in ("oracle", "mc_hard", "mc_soft"),
            "'oracle', 'mc_hard' or 'mc_soft'",
        )
        for key in ("mc_rollouts", "num_prompts", "eval_prompts", "train_steps", "batch_size"):
            _require(config, f"prm.{key}", lambda v: _is_int(v) and v >= 1, "an int >= 1")
        for key in ("mc_max_new_tokens", "last_k"):
            _require(config, f"prm.{key}", lambda v: _is_int(v) and v >= 0, "an int >= 0")
        _require(config, "prm.learning_rate", lambda v: _is_number(v) and v > 0, "a number > 0")
        _require(config, "prm.threshold", lambda v: _is_number(v) and 0 < v < 1, "in (0, 1)")
        _require(config, "prm.balance", lambda v: isinstance(v, bool), "a bool")
    if uses("prm"):
        path = config.get("prm", {}).get("path", "")
        if not path:
            raise ConfigError(
                "prm.path is empty but the 'prm' step scorer is on (reward.step_scorer='prm' "
                "or reward.weights.prm): set --config.prm.path=<train_prm workdir>/prm "
                "(python -m experiments.train_prm writes it)"
            )
        if not os.path.isfile(os.path.join(path, "prm.json")):
            raise ConfigError(
                f"prm.path={path!r}: not a PRM checkpoint (no prm.json there); set "
                "--config.prm.path=<train_prm workdir>/prm"
            )
    if _has(config, "judge"):
        _require(config, "judge.num_judgements", lambda v: _is_int(v) and v >= 1, "an int >= 1")
        _require(config, "judge.max_new_tokens", lambda v: _is_int(v) and v >= 1, "an int >= 1")
        _require(config, "judge.temperature", lambda v: _is_number(v) and v > 0, "a number > 0")
        jpath = config.judge.get("path", "")
        if uses("judge") and jpath and not os.path.isdir(jpath):
            raise ConfigError(
                f"judge.path={jpath!r}: no such directory; give an HF checkpoint directory "
                "(a run's export/) or '' to judge with the policy itself"
            )
    if _has(config, "prof"):
        _require(config, "prof.n_remove", lambda v: _is_int(v) and v >= 0, "an int >= 0 (0 = off)")
        _require(config, "prof.len_coef", lambda v: _is_number(v) and v >= 0, "a number >= 0")
        n_rm = config.prof.get("n_remove", 0)
        if n_rm:
            from jaxrl_reason.rewards.registry import get_reward

            if not scorer or "step_scores" not in get_reward(scorer).supplies:
                raise ConfigError(
                    f"prof.n_remove={n_rm} needs step scores: set --config.reward.step_scorer="
                    "prm (with prm.path) or oracle_steps"
                )
            n = config.rollout.get("n_samples", 1) if "rollout" in config else 1
            if n_rm >= n:
                raise ConfigError(
                    f"prof.n_remove={n_rm} must be < rollout.n_samples={n} (PROF keeps "
                    "n_samples - n_remove responses per prompt)"
                )


@register_validator
def _check_vine_rollout(config, num_devices):
    """``rollout.vine`` (the budget of ``rollout.strategy = "vine"``; see rollout.vine)."""
    if not _has(config, "rollout.vine"):
        return
    from jaxrl_reason.rollout.vine import WHICH

    for key in ("k", "max_steps", "every", "interval", "chunk_rows"):
        _require(config, f"rollout.vine.{key}", lambda v: _is_int(v) and v >= 1, "an int >= 1")
    _require(
        config,
        "rollout.vine.which",
        lambda v: v in WHICH,
        f"one of {WHICH} (every step start, every `every`-th step, or SPO-chain's cut points)",
    )
    _require(
        config,
        "rollout.vine.rho",
        lambda v: _is_number(v) and 0 < v <= 1,
        "in (0, 1] (SPO's cut-point probability threshold, 0.9)",
    )
    vine = config.rollout.vine
    if (
        config.rollout.get("strategy", "group") == "vine"
        and _has(config, "algo.estimator")
        and config.algo.estimator == "spo_chain"
        and "rho" in config.algo.get("estimator_kwargs", {})
        and float(config.algo.estimator_kwargs.rho) != float(vine.get("rho", 0.9))
    ):
        raise ConfigError(
            f"algo.estimator_kwargs.rho={config.algo.estimator_kwargs.rho} differs from "
            f"rollout.vine.rho={vine.get('rho', 0.9)}: SPO cuts and masks at the same "
            "threshold; set both to one value"
        )


@register_validator
def _check_prm(config, num_devices):
    """``prm.*`` (PRIME's online implicit PRM, :mod:`jaxrl_reason.train.implicit_prm`): positive
    ``lr`` / ``beta``, a known ``update`` order, and, when ``online``, an estimator that reads
    the PRM's ``process_rewards`` with no second, disagreeing ``beta``."""
    if "implicit_prm" not in config:
        return
    from jaxrl_reason.train.implicit_prm import PRM_UPDATES

    _require(config, "implicit_prm.online", lambda v: isinstance(v, bool), "a bool")
    _require(
        config,
        "implicit_prm.lr",
        lambda v: _is_number(v) and v > 0,
        "a finite number > 0 (the PRM's AdamW learning rate)",
        "PRIME uses --config.implicit_prm.lr=1e-6",
    )
    _require(
        config,
        "implicit_prm.beta",
        lambda v: _is_number(v) and v > 0,
        "a finite number > 0 (r = beta * log pi_prm / pi_ref)",
        "PRIME uses --config.implicit_prm.beta=0.05",
    )
    _require(
        config,
        "implicit_prm.grad_clip",
        lambda v: _is_number(v) and v >= 0,
        "a finite number >= 0 (the global-norm clip; 0 turns clipping off)",
    )
    _require(
        config,
        "implicit_prm.update_order",
        lambda v: v in PRM_UPDATES,
        f"one of {PRM_UPDATES} (train the PRM before or after it scores the step's rollouts)",
        "set --config.implicit_prm.update_order=before (PRIME's default)",
    )
    if not config.implicit_prm.get("online", False) or not _has(config, "algo.estimator"):
        return
    from jaxrl_reason import credit

    est = config.algo.estimator
    if est not in credit.names():
        return  # _check_estimator_inputs names it
    reads = set(credit.inputs(est).values()) | set(credit.optional_inputs(est).values())
    if "process_rewards" not in reads:
        users = [n for n in credit.names() if "process_rewards" in credit.optional_inputs(n)]
        users += [n for n in credit.names() if "process_rewards" in credit.inputs(n)]
        raise ConfigError(
            f"implicit_prm.online=True but algo.estimator={est!r} does not read the PRM's "
            f"process_rewards (the PRM would train for nothing); use algo.estimator in "
            f"{sorted(set(users))} or set --config.implicit_prm.online=False"
        )
    kw = config.algo.get("estimator_kwargs", {})
    if "beta" in kw and float(kw["beta"]) != float(config.implicit_prm.beta):
        raise ConfigError(
            f"algo.estimator_kwargs.beta={kw['beta']!r} differs from implicit_prm.beta="
            f"{config.implicit_prm.beta!r}: with implicit_prm.online the PRM's beta scales the "
            "process rewards "
            "(the estimator's is unused); set them equal or remove estimator_kwargs.beta"
        )


@register_validator
def _check_objective(config, num_devices):
    """``algo.objective`` (``rl`` | ``sft`` | ``dpo``), ``algo.sft_coef``, ``star.*`` and
    ``dpo.*``: the supervised and preference objectives train no critic, PRM or KL term, DPO
    needs a pair source and even (pair-holding) batch sizes."""
    if not _has(config, "algo"):
        return
    from jaxrl_reason.train.selftrain import DPO_PAIR_SOURCES
    from jaxrl_reason.train.step import OBJECTIVES

    _require(
        config,
        "algo.objective",
        lambda v: v in OBJECTIVES,
        f"one of {OBJECTIVES} (RL, STaR/RAFT fine-tuning on verified samples, DPO)",
        "set --config.algo.objective=rl",
    )
    _require(
        config,
        "algo.sft_coef",
        lambda v: _is_number(v) and v >= 0,
        "a finite number >= 0 (weight of the NLL of verified-correct rows; 0 = off)",
    )
    _require(config, "star.rationalize", lambda v: isinstance(v, bool), "a bool")
    _require(
        config,
        "star.hint_template",
        lambda v: isinstance(v, str) and "{answer}" in v and bool(v.format(answer="1")),
        "a text holding '{answer}' (STaR's hint; e.g. '(The answer is {answer}.)')",
    )
    _require(config, "star.min_correct", lambda v: _is_int(v) and v >= 1, "an int >= 1")
    _require(
        config,
        "dpo.beta",
        lambda v: _is_number(v) and v > 0,
        "a finite number > 0 (DPO's KL strength beta)",
        "DPO's commands use --config.dpo.beta=0.1",
    )
    _require(
        config,
        "dpo.label_smoothing",
        lambda v: _is_number(v) and 0 <= v < 0.5,
        "in [0, 0.5) (cDPO's eps; 0 = plain DPO)",
    )
    objective = config.algo.get("objective", "rl")
    if objective != "rl" and config.algo.get("sft_coef", 0.0):
        raise ConfigError(
            f"algo.sft_coef={config.algo.sft_coef} with algo.objective={objective!r}: the "
            "auxiliary NLL term is for RL runs; set --config.algo.sft_coef=0"
        )
    if config.get("star", {}).get("rationalize", False):
        if objective != "sft":
            raise ConfigError(
                f"star.rationalize=True with algo.objective={objective!r}: rationalisation "
                "feeds STaR's fine-tuning; set --config.algo.objective=sft or "
                "--config.star.rationalize=False"
            )
        strategy = config.rollout.get("strategy", "group") if "rollout" in config else "group"
        if strategy != "group":
            raise ConfigError(
                f"star.rationalize=True needs rollout.strategy='group' (got {strategy!r}): the "
                "hinted re-samples replace whole prompt groups; set --config.rollout.strategy="
                "group or --config.star.rationalize=False"
            )
    if objective == "rl":
        return
    if config.algo.get("value_head", False):
        raise ConfigError(
            f"algo.value_head=True with algo.objective={objective!r}: no critic is trained "
            "without RL; set --config.algo.value_head=False"
        )
    if config.get("implicit_prm", {}).get("online", False):
        raise ConfigError(
            f"implicit_prm.online=True with algo.objective={objective!r}: the PRM's rewards "
            "feed an RL estimator; set --config.implicit_prm.online=False"
        )
    kl = config.get("loss", {}).get("kl_coef", 0.0)
    if kl:
        raise ConfigError(
            f"loss.kl_coef={kl} with algo.objective={objective!r}: the KL term is not part of "
            "this objective (DPO's beta is its KL strength); set --config.loss.kl_coef=0"
        )
    if objective != "dpo":
        return
    pairs = config.get("dpo", {}).get("pairs", "")
    if pairs not in DPO_PAIR_SOURCES:
        raise ConfigError(
            f"dpo.pairs={pairs!r}: algo.objective='dpo' needs a pair source; set "
            "--config.dpo.pairs=self (verified vs refuted samples of each prompt) or "
            "--config.dpo.pairs=file with --config.dpo.pairs_path=<pairs.jsonl>"
        )
    if pairs == "file":
        path = config.dpo.get("pairs_path", "")
        if not path or not os.path.isfile(path):
            raise ConfigError(
                f"dpo.pairs_path={path!r}: dpo.pairs='file' needs a JSONL file of "
                '{"prompt", "chosen", "rejected"} lines; set --config.dpo.pairs_path=<file>'
            )
    elif int(config.rollout.get("n_samples", 1) if "rollout" in config else 1) < 2:
        raise ConfigError(
            "dpo.pairs='self' needs rollout.n_samples >= 2 (a verified and a refuted sample "
            "of the same prompt); raise --config.rollout.n_samples"
        )
    for key in ("train.mini_batch_size", "train.micro_batch_size"):
        if _has(config, key) and _get(config, key) % 2:
            raise ConfigError(
                f"{key}={_get(config, key)} must be even with algo.objective='dpo' (a pair's "
                f"chosen and rejected rows share a micro-batch); set --config.{key} to an even "
                "divisor of the batch"
            )
