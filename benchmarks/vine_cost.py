"""What Monte Carlo vines cost: continuation tokens per step and the step-time split.

    python -m benchmarks.vine_cost --config experiments/configs/smollm2_arith_chain_vineppo.py
    python -m benchmarks.vine_cost --config experiments/configs/smollm2_arith_chain_spo_chain.py \\
        --steps 3 --config.rollout.vine.k=9
    python -m benchmarks.vine_cost --config experiments/configs/smollm2_arith_chain_vineppo.py \\
        --config.model.name=tiny_debug --config.rollout.batch_prompts=2 \\
        --config.rollout.n_samples=2 --config.rollout.max_new_tokens=8 \\
        --config.train.mini_batch_size=4 --config.train.micro_batch_size=2 \\
        --config.optim.trainable=all   # a smoke run

Runs ``--steps`` training steps of a ``rollout.strategy = "vine"`` config with the Trainer
(no evaluation, checkpoints or export; a temporary run directory) and prints, per step: the
main responses' tokens, the estimated states, continuations and continuation tokens
(``rollout/*`` of :class:`jaxrl_reason.rollout.vine.VineStrategy`), and the wall-clock split
rollout main responses / continuations / verify (continuations' verifier) / other rollout
host work (step segmentation) / score / credit + update. Steps 1 and 2 include compilation
(the second recompiles for the updated parameters' placement); the summary line averages
steps 3 and later (the last step when there are fewer).
"""

from __future__ import annotations

import argparse
import tempfile


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True, help="a config with rollout.strategy='vine'")
    ap.add_argument("--steps", type=int, default=3)
    args, rest = ap.parse_known_args(argv)

    import numpy as np

    from jaxrl_reason.train.config import load_config
    from jaxrl_reason.train.loop import Trainer

    overrides = [
        "--config.eval_every=0",
        "--config.checkpoint_every=0",
        "--config.export=False",
        f"--config.total_steps={max(args.steps, 1)}",
        *rest,
    ]
    cfg = load_config(args.config, overrides)
    if cfg.rollout.strategy != "vine":
        raise SystemExit(f"--config: rollout.strategy={cfg.rollout.strategy!r}, expected 'vine'")
    cols = [
        ("resp_tok", "rollout/response_tokens"),
        ("states", "rollout/states"),
        ("conts", "rollout/continuations"),
        ("cont_tok", "rollout/continuation_tokens"),
        ("main_s", "time/rollout_main_s"),
        ("cont_s", "time/rollout_continuations_s"),
        ("verify_s", "time/rollout_verify_s"),
        ("other_s", "time/rollout_other_s"),
        ("score_s", "time/reward_s"),
        ("update_s", "time/train_s"),
        ("step_s", "time/step_s"),
    ]
    v = cfg.rollout.vine
    print(
        f"# {args.config}: estimator={cfg.algo.estimator}, model={cfg.model.name}, "
        f"{cfg.rollout.batch_prompts} prompts x {cfg.rollout.n_samples} samples, "
        f"max_new_tokens={cfg.rollout.max_new_tokens}, vine k={v.k} max_steps={v.max_steps} "
        f"which={v.which!r}"
    )
    print("| step | " + " | ".join(c for c, _ in cols) + " |")
    print("|" + "---|" * (len(cols) + 1))
    rows = []
    with tempfile.TemporaryDirectory() as work:
        trainer = Trainer(cfg, work)
        try:
            for i in range(args.steps):
                m = trainer.train_step()
                traj = trainer.last_trajectories
                m["rollout/response_tokens"] = float(np.asarray(traj.lengths).sum())
                m["time/rollout_other_s"] = m["time/rollout_s"] - sum(
                    m[k]
                    for k in (
                        "time/rollout_main_s",
                        "time/rollout_continuations_s",
                        "time/rollout_verify_s",
                    )
                )
                rows.append(m)
                print(f"| {i + 1} | " + " | ".join(f"{m[k]:.4g}" for _, k in cols) + " |")
        finally:
            trainer.ckpt.close()
    later = rows[2:] or rows[-1:]
    mean = {k: float(np.mean([r[k] for r in later])) for _, k in cols}
    per_resp = mean["rollout/continuation_tokens"] / max(mean["rollout/response_tokens"], 1.0)
    share = mean["time/rollout_continuations_s"] / max(mean["time/step_s"], 1e-9)
    print(
        f"# mean over {len(later)} step(s): {mean['rollout/continuation_tokens']:.0f} "
        f"continuation tokens per step ({per_resp:.2f} per response token); continuations "
        f"take {share:.0%} of the step"
    )


if __name__ == "__main__":
    main()
