"""The run directory: config.json, metrics.jsonl, TensorBoard events, samples, PNG curves.

Layout of ``workdir`` (``docs/design.md``)::

    config.json      the resolved config
    metrics.jsonl    one JSON object per logged step: {"step": 3, "reward/mean": 0.41, ...}
    samples.jsonl    per logged step a few {"step", "prompt", "response", "reward", ...} rows
    tensorboard/     TensorBoard event files (tensorboardX)
    plots/           one PNG per curve (``write_plots()``), e.g. plots/reward_mean.png

Only process 0 writes (``is_main_process``); other processes get a writer whose methods are
no-ops, so the training loop calls them unconditionally. On resume the writer truncates
``metrics.jsonl`` / ``samples.jsonl`` to the restored step, so a resumed run's files equal an
uninterrupted run's.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

METRICS_FILE = "metrics.jsonl"
SAMPLES_FILE = "samples.jsonl"
CONFIG_FILE = "config.json"


def _to_json_scalar(value: Any) -> Any:
    """Python scalar for JSON: arrays of size 1 -> float/int; NaN / inf -> None (strict JSON)."""
    if isinstance(value, bool | str) or value is None:
        return value
    if isinstance(value, int):
        return value
    arr = np.asarray(value)
    if arr.size != 1:
        raise ValueError(f"metric values must be scalars, got shape {arr.shape}")
    item = arr.reshape(()).item()
    if isinstance(item, bool):
        return item
    if isinstance(item, int):
        return int(item)
    item = float(item)
    return item if math.isfinite(item) else None


def _plain(value: Any) -> Any:
    """JSON-able copy of a sample row value (arrays -> lists / scalars)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, str | bool | int) or value is None:
        return value
    arr = np.asarray(value)
    if arr.ndim == 0:
        return _to_json_scalar(arr)
    return arr.tolist()


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Reads a JSON-lines file (missing file -> ``[]``; a torn last line is ignored)."""
    rows = []
    if not os.path.exists(path):
        return rows
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a line cut by a crash mid-write: everything after it is suspect
    return rows


def truncate_jsonl(path: str | os.PathLike, max_step: int) -> int:
    """Keeps only rows with ``row["step"] <= max_step`` (atomic rewrite). Returns rows kept."""
    if not os.path.exists(path):
        return 0
    rows = [r for r in read_jsonl(path) if int(r.get("step", -1)) <= max_step]
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    os.replace(tmp, path)
    return len(rows)


def _plot_name(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", key).strip("_") or "metric"


class RunWriter:
    """Writes one run's files; see the module docstring for the layout.

    Args:
      workdir: run directory (created).
      is_main_process: only the main process writes; elsewhere every method is a no-op.
      resume_step: ``None`` for a fresh run (existing metrics/samples files are replaced);
        the restored step on resume (rows with a later step are dropped, TensorBoard events
        after it are purged).
      tensorboard: also write TensorBoard events.
    """

    def __init__(
        self,
        workdir: str | os.PathLike,
        *,
        is_main_process: bool = True,
        resume_step: int | None = None,
        tensorboard: bool = True,
    ):
        self.workdir = os.fspath(workdir)
        self.active = is_main_process
        self.metrics_path = os.path.join(self.workdir, METRICS_FILE)
        self.samples_path = os.path.join(self.workdir, SAMPLES_FILE)
        self.plots_dir = os.path.join(self.workdir, "plots")
        self._tb = None
        self._metrics_f = None
        self._samples_f = None
        if not self.active:
            return
        os.makedirs(self.workdir, exist_ok=True)
        max_step = -1 if resume_step is None else int(resume_step)
        truncate_jsonl(self.metrics_path, max_step)
        truncate_jsonl(self.samples_path, max_step)
        self._metrics_f = open(self.metrics_path, "a")  # noqa: SIM115 - closed in close()
        self._samples_f = open(self.samples_path, "a")  # noqa: SIM115
        if tensorboard:
            from tensorboardX import SummaryWriter

            # purge_step drops events at steps >= it left by the interrupted run.
            self._tb = SummaryWriter(
                logdir=os.path.join(self.workdir, "tensorboard"),
                purge_step=None if resume_step is None else max_step + 1,
            )

    def write_config(self, config: Any) -> None:
        """Writes ``config.json`` from a ConfigDict (``to_json_best_effort``) or a mapping."""
        if not self.active:
            return
        if hasattr(config, "to_json_best_effort"):
            data = json.loads(config.to_json_best_effort())
        else:
            data = _plain(dict(config))
        with open(os.path.join(self.workdir, CONFIG_FILE), "w") as f:
            json.dump(data, f, indent=2, sort_keys=True)
            f.write("\n")

    def write_metrics(self, step: int, metrics: Mapping[str, Any]) -> dict:
        """Appends ``{"step": step, **metrics}`` to metrics.jsonl (flushed) and TensorBoard.

        Values may be Python / numpy / JAX scalars; they are stored as floats (ints stay ints),
        non-finite values as ``null``. Returns the row written.
        """
        row = {"step": int(step)}
        for key, value in metrics.items():
            if key == "step":
                continue
            row[str(key)] = _to_json_scalar(value)
        if not self.active:
            return row
        self._metrics_f.write(json.dumps(row) + "\n")
        self._metrics_f.flush()
        if self._tb is not None:
            for key, value in row.items():
                if key != "step" and isinstance(value, int | float) and not isinstance(value, bool):
                    self._tb.add_scalar(key, value, global_step=int(step))
        return row

    def write_samples(self, step: int, rows: Iterable[Mapping[str, Any]]) -> None:
        """Appends sample completions (e.g. prompt / response / reward) for ``step``."""
        if not self.active:
            return
        rows = list(rows)
        for r in rows:
            self._samples_f.write(json.dumps({"step": int(step), **_plain(dict(r))}) + "\n")
        self._samples_f.flush()
        if self._tb is not None and rows:
            text = "\n\n".join(
                "\n".join(f"**{k}**: {v}" for k, v in _plain(dict(r)).items()) for r in rows
            )
            self._tb.add_text("samples", text, global_step=int(step))

    def write_plots(self, keys: Sequence[str] | None = None) -> list[str]:
        """Renders one PNG per curve in metrics.jsonl (matplotlib, Agg); returns the paths.

        Sparse curves (e.g. ``eval/*``, logged every k steps) are drawn with markers.
        """
        if not self.active:
            return []
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        self._metrics_f.flush()
        rows = read_jsonl(self.metrics_path)
        if keys is None:
            keys = sorted({k for r in rows for k in r if k != "step"})
        os.makedirs(self.plots_dir, exist_ok=True)
        paths = []
        for key in keys:
            pts = [
                (r["step"], r[key])
                for r in rows
                if isinstance(r.get(key), int | float) and not isinstance(r.get(key), bool)
            ]
            if not pts:
                continue
            steps, values = zip(*pts, strict=True)
            fig, ax = plt.subplots(figsize=(5, 3.2), dpi=100)
            sparse = len(pts) < max(len(rows), 1) / 2 or len(pts) < 10
            ax.plot(steps, values, marker="o" if sparse else None, markersize=3)
            ax.set_xlabel("step")
            ax.set_title(key)
            ax.grid(alpha=0.3)
            fig.tight_layout()
            path = os.path.join(self.plots_dir, _plot_name(key) + ".png")
            fig.savefig(path)
            plt.close(fig)
            paths.append(path)
        return paths

    def flush(self) -> None:
        if not self.active:
            return
        self._metrics_f.flush()
        self._samples_f.flush()
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        if not self.active:
            return
        for f in (self._metrics_f, self._samples_f):
            if f is not None and not f.closed:
                f.close()
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    def __enter__(self) -> RunWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress_bar(
    total: int,
    *,
    initial: int = 0,
    is_main_process: bool = True,
    desc: str = "train",
    **kwargs: Any,
):
    """A tqdm bar over training steps (silent on non-main processes); see :func:`update_bar`."""
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        initial=initial,
        desc=desc,
        disable=not is_main_process,
        dynamic_ncols=True,
        **kwargs,
    )


def update_bar(
    bar,
    metrics: Mapping[str, Any],
    keys: Sequence[str] = ("reward/mean", "accuracy", "loss", "eval/accuracy"),
    n: int = 1,
) -> None:
    """Advances ``bar`` by ``n`` steps and shows the live values of ``keys`` found in metrics."""
    shown = {}
    for key in keys:
        if key in metrics:
            v = _to_json_scalar(metrics[key])
            shown[key] = f"{v:.4g}" if isinstance(v, float) else v
    if shown:
        bar.set_postfix(shown, refresh=False)
    bar.update(n)
