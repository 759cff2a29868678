"""Launch an RL run.

    python -m experiments.train --config experiments/configs/smollm2_arith_grpo.py \
        --workdir runs/arith [--resume] [--config.total_steps=50 ...]
    python -m experiments.train --config FILE --print-config [--config.x=y ...]

The config is loaded, overridden and validated before JAX compiles anything; the run writes
config.json, metrics.jsonl, TensorBoard events, samples and plots to ``--workdir``.
"""

from __future__ import annotations

import sys


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
    from jaxrl_reason.train.loop import run_experiment

    rows = run_experiment(config, args.workdir, resume=args.resume)
    last = next((r for r in reversed(rows) if "eval/accuracy" in r), None)
    if last is not None:
        print(f"final held-out accuracy: {last['eval/accuracy']:.3f} (step {last['step']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
