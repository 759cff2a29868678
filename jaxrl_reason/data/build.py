"""Builds the task named by ``config.task`` for a split (train / test)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from jaxrl_reason.data.base import Task

__all__ = [
    "GSM8K_SOURCES",
    "TASK_NAMES",
    "build_task",
    "cache_root",
    "register_task_builder",
    "task_names",
]

#: ``config.task.name`` values :func:`build_task` knows.
TASK_NAMES = ("arithmetic", "arith_chain", "gsm8k", "math", "math_jsonl")

#: ``config.task.source`` values for GSM8K: a local JSONL folder, or an explicit download.
GSM8K_SOURCES = ("local", "tfds")

#: Builders registered by higher layers (``jaxrl_reason.envs`` registers its agent tasks,
#: ``multihop`` and ``arith_chain_tool``, when imported): ``name -> fn(task_cfg, split)``.
_BUILDERS: dict[str, Callable[[Any, str], Task]] = {}


def register_task_builder(name: str, fn: Callable[[Any, str], Task]) -> None:
    """Makes ``config.task.name = name`` build ``fn(config.task, split)`` (idempotent)."""
    if name in TASK_NAMES:
        raise ValueError(f"task name {name!r} is built in")
    _BUILDERS[name] = fn


def task_names() -> tuple[str, ...]:
    """Every ``config.task.name`` :func:`build_task` knows now (built in + registered)."""
    return (*TASK_NAMES, *sorted(_BUILDERS))


def cache_root() -> str:
    """Where prepared datasets are cached: ``$JAXRL_CACHE_DIR`` or ``~/.cache/jaxrl_reason``."""
    return os.environ.get("JAXRL_CACHE_DIR") or os.path.expanduser("~/.cache/jaxrl_reason")


def _build_gsm8k(task_cfg: Any, split: str, common: dict) -> Task:
    """GSM8K from ``task.data_dir`` (``task.source="local"``, the default) or, only when
    ``task.source="tfds"`` says so, downloaded through tensorflow-datasets.

    A missing, mistyped or incomplete ``data_dir`` is an error naming the path and the fix,
    never a fallback to a download. Nothing is written into ``data_dir``: the array_record
    copy goes to ``<cache_root()>/gsm8k`` and a tfds download (with its ``downloads/``) to
    ``$TFDS_DATA_DIR`` or ``<cache_root()>/tfds``.
    """
    from jaxrl_reason.data.gsm8k import Gsm8kTask

    source = task_cfg.get("source", "local") or "local"
    data_dir = task_cfg.get("data_dir", "") or ""
    fix_tfds = "or set --config.task.source=tfds to download GSM8K through tensorflow-datasets"
    if source == "local":
        if not data_dir:
            raise ValueError(
                "task.data_dir is empty: task.source='local' reads GSM8K from a folder with "
                "train.jsonl and test.jsonl (openai/grade-school-math); set "
                f"--config.task.data_dir=/path/to/gsm8k, {fix_tfds}"
            )
        path = os.path.abspath(os.path.expanduser(data_dir))
        if not os.path.isdir(path):
            raise FileNotFoundError(
                f"task.data_dir={data_dir!r}: no such directory ({path}); fix the path "
                f"(a folder with train.jsonl and test.jsonl), {fix_tfds}"
            )
        want = os.path.join(path, f"{split}.jsonl")
        if not os.path.isfile(want):
            have = sorted(f for f in os.listdir(path) if f.endswith(".jsonl")) or "no .jsonl files"
            raise FileNotFoundError(
                f"task.data_dir={data_dir!r} has no {split}.jsonl (needed for the {split} split; "
                f"found: {have}); point it at the folder with train.jsonl and test.jsonl, "
                f"{fix_tfds}"
            )
        # Converted once to array_record (cached outside data_dir), then read through
        # tfds.data_source like the catalog's copy.
        return Gsm8kTask(
            split,
            source="local",
            jsonl_dir=path,
            cache_dir=os.path.join(cache_root(), "gsm8k"),
            **common,
        )
    if source == "tfds":
        if data_dir:
            raise ValueError(
                f"task.data_dir={data_dir!r} is for task.source='local'; with "
                "task.source='tfds' GSM8K is downloaded to $TFDS_DATA_DIR or the cache "
                "(set --config.task.data_dir='' or --config.task.source=local)"
            )
        tfds_dir = os.environ.get("TFDS_DATA_DIR") or os.path.join(cache_root(), "tfds")
        return Gsm8kTask(split, source="tfds", data_dir=tfds_dir, **common)
    raise ValueError(f"task.source={source!r}: use one of {GSM8K_SOURCES}")


def build_task(task_cfg: Any, split: str) -> Task:
    """A :class:`jaxrl_reason.data.base.Task` from ``config.task`` for ``split``."""
    kind = task_cfg.name
    if kind in _BUILDERS:
        return _BUILDERS[kind](task_cfg, split)
    common = {"prompt_format": task_cfg.get("prompt_format", "hash")}
    if task_cfg.get("verify_format", None):
        common["verify_format"] = task_cfg.verify_format
    if task_cfg.get("system_prompt", None) is not None:
        common["system_prompt"] = task_cfg.system_prompt
    if kind == "arithmetic":
        from jaxrl_reason.data.arithmetic import ArithmeticTask

        return ArithmeticTask(
            split,
            seed=task_cfg.get("seed", 0),
            low=task_cfg.low,
            high=task_cfg.high,
            ops=tuple(task_cfg.ops),
            num_examples=task_cfg.get(f"num_{split}", None) or None,
            template=task_cfg.get("template", "What is {a} {op} {b}?"),
            **common,
        )
    if kind == "arith_chain":
        from jaxrl_reason.data.arith_chain import DEFAULT_TEMPLATE, ArithChainTask

        return ArithChainTask(
            split,
            seed=task_cfg.get("seed", 0),
            lengths=tuple(task_cfg.get("lengths", (1, 2, 3))),
            low=task_cfg.get("low", 1),
            high=task_cfg.get("high", 9),
            ops=tuple(task_cfg.get("ops", "+-")),
            num_examples=task_cfg.get(f"num_{split}", None) or None,
            template=task_cfg.get("template", "") or DEFAULT_TEMPLATE,
            **common,
        )
    if kind == "gsm8k":
        return _build_gsm8k(task_cfg, split, common)
    if kind in ("math_jsonl", "math"):  # "math": the name in jaxrl_reason.data.TASKS
        from jaxrl_reason.data.math_dataset import MathTask

        return MathTask(task_cfg.path, **common)
    raise ValueError(
        f"task.name={kind!r} is not a known task; use one of {task_names()} (the agent tasks "
        "are registered by importing jaxrl_reason.envs)"
    )
