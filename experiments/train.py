"""Launch an RL run.

    python -m experiments.train --config experiments/configs/smollm2_arith_grpo.py \
        --workdir runs/arith [--resume | --overwrite] [--config.total_steps=50 ...]
    python -m experiments.train --config FILE --print-config [--config.x=y ...]

The config is loaded, overridden and validated before JAX compiles anything; the run writes
config.json, metrics.jsonl, TensorBoard events, samples and plots to ``--workdir``. A workdir
that already holds a run is refused unless ``--resume`` (continue it) or ``--overwrite``
(delete it and start afresh). SIGTERM / SIGINT finish the current step, save a checkpoint and
exit 0 with the command that resumes.
"""

from __future__ import annotations

import sys

#: What a run writes into its workdir (a workdir holding any of them holds a run).
RUN_FILES = (
    "metrics.jsonl",
    "samples.jsonl",
    "config.json",
    "checkpoints",
    "tensorboard",
    "plots",
    "export",
)


def previous_run(workdir: str) -> list[str]:
    """The run files present in ``workdir`` (empty when it holds no run)."""
    import os

    if not os.path.isdir(workdir):
        return []
    return [f for f in ("metrics.jsonl", "checkpoints") if os.path.exists(os.path.join(workdir, f))]


def clear_run(workdir: str) -> None:
    """Deletes what a run wrote into ``workdir`` (``--overwrite`` only)."""
    import os
    import shutil

    for name in RUN_FILES:
        path = os.path.join(workdir, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)


def main(argv: list[str] | None = None) -> int:
    from jaxrl_reason.train.config import ConfigError, load_config, parse_flags, validate

    args = parse_flags(sys.argv[1:] if argv is None else argv, prog="experiments.train")
    try:
        config = load_config(args.config, args.overrides)
        if args.print_config:
            # Validated (load_config) and resolved; no model is loaded, nothing compiles.
            import json

            from jaxrl_reason.train.config import to_json_dict

            print(json.dumps(to_json_dict(config), indent=2, sort_keys=True))
            return 0
        import jax

        from jaxrl_reason.parallel import maybe_initialize_distributed

        maybe_initialize_distributed()
        validate(config, num_devices=jax.device_count())
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    existing = previous_run(args.workdir)
    if existing and not (args.resume or args.overwrite):
        print(
            f"error: {args.workdir} already holds a run ({', '.join(existing)}); nothing was "
            "changed. Continue it with --resume, or start afresh with a new --workdir or "
            "--overwrite (which deletes that run's metrics and checkpoints).",
            file=sys.stderr,
        )
        return 2
    if existing and args.overwrite:
        clear_run(args.workdir)
    from jaxrl_reason.train.loop import run_experiment

    rows, trainer = run_experiment(config, args.workdir, resume=args.resume, return_trainer=True)
    if trainer.stopped_by_signal:
        print(
            f"stopped by {trainer.stopped_by_signal} after step {trainer.step}; checkpoint "
            f"saved. Resume with: python -m experiments.train --config {args.config} "
            f"--workdir {args.workdir} --resume" + "".join(f" {o}" for o in args.overrides)
        )
        return 0
    last = next((r for r in reversed(rows) if "eval/accuracy" in r), None)
    if last is not None:
        print(f"final held-out accuracy: {last['eval/accuracy']:.3f} (step {last['step']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
