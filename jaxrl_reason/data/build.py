"""Builds the task named by ``config.task`` for a split (train / test)."""

from __future__ import annotations

import os
from typing import Any

from jaxrl_reason.data.base import Task

__all__ = ["build_task"]


def build_task(task_cfg: Any, split: str) -> Task:
    """A :class:`jaxrl_reason.data.base.Task` from ``config.task`` for ``split``."""
    kind = task_cfg.name
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
        from jaxrl_reason.data.gsm8k import Gsm8kTask

        data_dir = task_cfg.get("data_dir", "") or None
        if data_dir and os.path.isfile(os.path.join(data_dir, f"{split}.jsonl")):
            # A local directory of JSONL: converted once to array_record (cached), then read
            # through tfds.data_source like the catalog's copy.
            cache = os.environ.get("JAXRL_CACHE_DIR") or os.path.expanduser("~/.cache/jaxrl_reason")
            return Gsm8kTask(
                split,
                source="local",
                jsonl_dir=data_dir,
                cache_dir=os.path.join(cache, "gsm8k"),
                **common,
            )
        return Gsm8kTask(split, data_dir=data_dir, **common)
    if kind == "math_jsonl":
        from jaxrl_reason.data.math_dataset import MathTask

        return MathTask(task_cfg.path, **common)
    raise ValueError(
        f"task.name={kind!r} is not a known task; use 'arithmetic', 'arith_chain', 'gsm8k' "
        "or 'math_jsonl'"
    )
