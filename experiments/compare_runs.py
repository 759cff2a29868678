"""Plot the same metrics of several runs side by side (one PNG) and print a summary table.

    python -m experiments.compare_runs runs/a runs/b --labels GRPO UCB-Con \
        --keys eval/accuracy accuracy distinct_answers --out docs/img/compare.png

Reads each run's ``metrics.jsonl``; a metric missing from a run is skipped for that run.
``--x tokens`` plots against the tokens the sampler generated so far
(``rollout/decoded_tokens_total``: runs at equal generation budget line up), ``--x wall``
against the training wall-clock so far (the sum of ``time/step_s``; evaluation excluded).
"""

from __future__ import annotations

import argparse
import os
import sys

X_AXES = {"step": "step", "tokens": "generated tokens", "wall": "training wall-clock (s)"}


def x_positions(rows, axis: str = "step") -> list[float]:
    """The x of each metrics row: its step, the generated tokens so far
    (``rollout/decoded_tokens_total``) or the summed ``time/step_s`` so far; rows before the
    first step (the step-0 evaluation) sit at 0."""
    if axis == "step":
        return [float(r["step"]) for r in rows]
    out, acc = [], 0.0
    for r in rows:
        if axis == "tokens":
            acc = float(r.get("rollout/decoded_tokens_total", acc))
        elif axis == "wall":
            acc += float(r.get("time/step_s", 0.0))
        else:
            raise ValueError(f"--x {axis!r}: choose one of {', '.join(X_AXES)}")
        out.append(acc)
    return out


def _series(rows, key, axis="step"):
    xs = x_positions(rows, axis)
    pts = [(x, r[key]) for x, r in zip(xs, rows, strict=True) if r.get(key) is not None]
    return [p[0] for p in pts], [p[1] for p in pts]


def main(argv: list[str] | None = None) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from jaxrl_reason.train.logging import read_jsonl

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", help="run directories (each with metrics.jsonl)")
    p.add_argument("--labels", nargs="+", default=None)
    p.add_argument("--keys", nargs="+", default=["eval/accuracy", "accuracy", "loss"])
    p.add_argument("--out", required=True, help="PNG path")
    p.add_argument("--title", default="")
    p.add_argument("--x", default="step", choices=sorted(X_AXES), help="the x axis")
    args = p.parse_args(argv)
    labels = args.labels or [os.path.basename(os.path.normpath(r)) for r in args.runs]
    if len(labels) != len(args.runs):
        p.error(f"--labels has {len(labels)} names for {len(args.runs)} runs")
    runs = [read_jsonl(os.path.join(r, "metrics.jsonl")) for r in args.runs]
    fig, axes = plt.subplots(1, len(args.keys), figsize=(4.2 * len(args.keys), 3.4), squeeze=False)
    for ax, key in zip(axes[0], args.keys, strict=True):
        for i, (rows, label) in enumerate(zip(runs, labels, strict=True)):
            x, y = _series(rows, key, args.x)
            if x:  # one colour per run in every panel, even where a run lacks the metric
                marker = "o" if key.startswith("eval/") else None
                ax.plot(x, y, marker=marker, ms=3, label=label, color=f"C{i}")
        ax.set_title(key)
        ax.set_xlabel(X_AXES[args.x])
        ax.grid(alpha=0.3)
    axes[0][0].legend()
    if args.title:
        fig.suptitle(args.title)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")
    header = f"{'run':16s} " + " ".join(f"{k:>22s}" for k in args.keys)
    print(header)
    for rows, label in zip(runs, labels, strict=True):
        cells = []
        for key in args.keys:
            _, y = _series(rows, key)
            cells.append(f"{y[0]:.3f} -> {y[-1]:.3f}" if y else "-")
        print(f"{label:16s} " + " ".join(f"{c:>22s}" for c in cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
