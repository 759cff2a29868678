"""Train a discriminative step PRM on responses sampled from the policy.

    python -m experiments.train_prm --config experiments/configs/smollm2_arith_chain_prm.py \
        --workdir runs/prm [--config.prm.labels=mc_soft --config.prm.train_steps=100 ...]

Samples ``prm.num_prompts * rollout.n_samples`` responses to training prompts, labels every
step (``prm.labels``: ``oracle`` / ``mc_hard`` / ``mc_soft``, see
:mod:`jaxrl_reason.train.prm`), trains a linear step head (and the top ``prm.last_k`` decoder
layers) with binary cross-entropy, saves the PRM to ``<workdir>/prm`` and prints held-out
ProcessBench first-error F1 before and after training (``<workdir>/prm_eval.json``). Use the
checkpoint in RL with ``--config.reward.step_scorer=prm --config.prm.path=<workdir>/prm``.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from jaxrl_reason.train.config import ConfigError, load_config, parse_flags

    args = parse_flags(sys.argv[1:] if argv is None else argv, prog="experiments.train_prm")
    try:
        config = load_config(args.config, args.overrides)
        if args.print_config:
            import json

            from jaxrl_reason.train.config import to_json_dict

            print(json.dumps(to_json_dict(config), indent=2, sort_keys=True))
            return 0
        if not args.workdir:
            raise ConfigError("--workdir is required (where the PRM and its metrics go)")
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    from jaxrl_reason.train.prm import run_train_prm

    out = run_train_prm(config, args.workdir)
    b, a = out["eval_before"], out["eval_after"]
    print(
        f"PRM saved to {out['path']} ({out['num_train']} training responses, "
        f"label mean {out['label_rate']:.2f}); loss {out['losses'][0]:.4f} -> "
        f"{out['losses'][-1]:.4f}; held-out first-error F1 {b['f1']:.3f} -> {a['f1']:.3f} "
        f"(acc_err {a['acc_err']:.3f}, acc_cor {a['acc_cor']:.3f}, step acc "
        f"{a['step_acc']:.3f}, {int(a['num_samples'])} samples; {out['time_s']:.0f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
