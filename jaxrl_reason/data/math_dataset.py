"""MATH-style problems with ``\\boxed{}`` answers (Hendrycks et al., 2021, arXiv 2103.03874).

Reads any of these layouts (records need ``problem`` and ``solution``; an ``answer`` field, if
present, is the gold answer, otherwise the last ``\\boxed{}`` of the solution is):

- a JSONL file, one record per line;
- a directory with ``<split>.jsonl``;
- the original MATH release: ``<root>/<split>/<subject>/<n>.json``, or a directory of subject
  folders, or of ``*.json`` files.

Order is deterministic: file order for JSONL, (subject, n) for the per-file layout.
"""

from __future__ import annotations

import glob
import json
import os
import re

from jaxrl_reason.data.base import Example, Task

__all__ = ["MathTask", "load_math_records"]


def _num_key(path: str) -> tuple:
    # test/algebra/10.json sorts after test/algebra/9.json
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path))


def load_math_records(path: str, split: str = "test") -> list[dict]:
    """Reads MATH-style records from a JSONL file or a directory (see the module docstring).

    Each returned dict has at least ``problem``, ``solution`` and ``unique_id`` (the
    record's own, or ``<split>/<subject>/<n>.json`` / ``<file>:<line>``).

    Raises:
      FileNotFoundError: nothing readable at ``path``.
      ValueError: a line that is not a JSON object, or a record that lacks ``problem`` or
        ``solution`` (names the file and line).
    """
    path = os.path.abspath(os.path.expanduser(path))
    records: list[dict] = []
    if os.path.isdir(path) and os.path.isfile(os.path.join(path, f"{split}.jsonl")):
        path = os.path.join(path, f"{split}.jsonl")
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if line.strip():
                    rec = _loads(line, f"{path}:{lineno}")
                    rec.setdefault("unique_id", f"{os.path.basename(path)}:{lineno}")
                    records.append(_check(rec, f"{path}:{lineno}"))
        return records
    if not os.path.isdir(path):
        raise FileNotFoundError(f"MATH data path {path!r} is neither a JSONL file nor a folder")
    root = os.path.join(path, split) if os.path.isdir(os.path.join(path, split)) else path
    files = sorted(
        glob.glob(os.path.join(root, "*", "*.json")) + glob.glob(os.path.join(root, "*.json")),
        key=_num_key,
    )
    if not files:
        raise FileNotFoundError(
            f"no MATH records under {path!r}: expected {split}.jsonl, a JSONL file, or "
            f"{split}/<subject>/<n>.json files"
        )
    base = os.path.dirname(root) if root.endswith(os.sep + split) else root
    for fp in files:
        with open(fp, encoding="utf-8") as f:
            rec = _loads(f.read(), fp)
        rec.setdefault("unique_id", os.path.relpath(fp, base))
        records.append(_check(rec, fp))
    return records


def _loads(text: str, where: str) -> dict:
    try:
        rec = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(
            f"MATH data at {where}: not valid JSON ({e.msg} at column {e.colno})"
        ) from None
    if not isinstance(rec, dict):
        raise ValueError(f"MATH data at {where}: expected a JSON object, got {type(rec).__name__}")
    return rec


def _check(rec: dict, where: str) -> dict:
    missing = [k for k in ("problem", "solution") if k not in rec]
    if missing and not ("problem" in rec and "answer" in rec):
        raise ValueError(f"MATH record at {where} lacks field(s) {missing}")
    return rec


class MathTask(Task):
    """MATH-style problems; the gold answer is the record's ``answer`` or last ``\\boxed{}``.

    Args:
      path: a JSONL file or a folder (see :func:`load_math_records`).
      split: which split to read from a folder (``"test"``).
      subjects: keep only these ``type`` values (e.g. ``("Algebra",)``); None keeps all.
      levels: keep only these levels (ints 1..5); None keeps all.
      num_examples: keep the first ``num_examples`` after filtering.
      **task_kwargs: see :class:`Task` (``prompt_format`` defaults to ``"boxed"``).
    """

    def __init__(
        self,
        path: str,
        split: str = "test",
        *,
        subjects: tuple[str, ...] | None = None,
        levels: tuple[int, ...] | None = None,
        num_examples: int | None = None,
        **task_kwargs,
    ):
        task_kwargs.setdefault("prompt_format", "boxed")
        super().__init__(**task_kwargs)
        from jaxrl_reason.rewards.extract import extract_boxed

        recs = load_math_records(path, split)
        if subjects is not None:
            recs = [r for r in recs if r.get("type") in set(subjects)]
        if levels is not None:
            want = {f"Level {int(v)}" for v in levels}
            recs = [r for r in recs if r.get("level") in want]
        if num_examples is not None:
            recs = recs[:num_examples]
        self._examples: list[Example] = []
        self.num_skipped = 0  # records whose solution has no box (no gold answer)
        for r in recs:
            gold = r.get("answer")
            if gold is None:
                gold = extract_boxed(r.get("solution", ""))
            if gold is None:
                self.num_skipped += 1
                continue
            meta = {k: v for k, v in r.items() if k not in ("problem", "answer", "unique_id")}
            self._examples.append(
                Example(id=str(r["unique_id"]), prompt=r["problem"], answer=str(gold), meta=meta)
            )
        if not self._examples:
            raise ValueError(f"MathTask: no usable records at {path!r} after filtering")
        self.split = split
        self.name = f"math/{split}"

    def __len__(self) -> int:
        return len(self._examples)

    def _get(self, index: int) -> Example:
        return self._examples[index]
