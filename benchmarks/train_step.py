"""Time one GRPO step on SmolLM2-135M in DESIGN.md §5b's peer configuration.

    python -m benchmarks.train_step [--steps 4] [--config.x=y ...]

8 prompts x 4 samples, at most 32 new tokens, float32, every parameter trained, one update
per step: the configuration in which TRL 1.16 took 32.5-35.2 s per step and Tunix 0.1.7 29.9 s
on this 2-core machine (measured by the project, quoted in shared/DESIGN.md §5b; those peers
are not installed here, so their numbers are quoted, not re-measured). Prints the median
rollout / reward / train / total seconds over the steps after the first (which compiles) and
the ratio to TRL's 32.5 s.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import sys
import tempfile

PEER_SECONDS = {"TRL 1.16 (quoted)": 32.5, "Tunix 0.1.7 (quoted)": 29.9}
CONFIG = os.path.join(
    os.path.dirname(__file__), "..", "experiments", "configs", "smollm2_arith_grpo.py"
)


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=4, help="RL steps (the first one compiles)")
    p.add_argument("--json", default=None, help="also write the medians and peak RSS here")
    args, overrides = p.parse_known_args(argv)
    from jaxrl_reason.train.config import load_config
    from jaxrl_reason.train.loop import Trainer

    cfg = load_config(
        CONFIG,
        [
            f"--config.total_steps={args.steps}",
            "--config.eval_every=0",
            "--config.checkpoint_every=0",
            "--config.export=False",
            "--config.rollout.batch_prompts=8",
            "--config.rollout.n_samples=4",
            "--config.rollout.max_new_tokens=32",
            "--config.rollout.temperature=1.0",
            "--config.train.mini_batch_size=32",
            "--config.train.micro_batch_size=32",
            "--config.optim.trainable=all",
            *overrides,
        ],
    )
    with tempfile.TemporaryDirectory() as workdir:
        trainer = Trainer(cfg, workdir)
        rows = [trainer.train_step() for _ in range(args.steps)]
        trainer.ckpt.close()
    steady = rows[1:] or rows
    keys = ("time/rollout_s", "time/reward_s", "time/train_s", "time/step_s")
    med = {k: statistics.median(r[k] for r in steady) for k in keys}
    print("GRPO step, SmolLM2-135M, 8x4 samples, <=32 new tokens, float32, all params")
    print(f"first step (compiles): {rows[0]['time/step_s']:.1f} s")
    print(
        "median over steps 2..{}: rollout {:.2f} s, reward {:.3f} s, train {:.2f} s, "
        "step {:.2f} s".format(len(rows), *(med[k] for k in keys))
    )
    print(f"mean response length: {statistics.mean(r['response_length/mean'] for r in steady):.1f}")
    # Peak resident memory of this process (Linux ru_maxrss is in KiB): the whole run, model
    # load and compilation included.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"peak RSS: {peak:.2f} GiB")
    for peer, s in PEER_SECONDS.items():
        print(f"vs {peer}: {s:.1f} s / {med['time/step_s']:.2f} s = {s / med['time/step_s']:.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "step_s": [r["time/step_s"] for r in rows],
                    "rollout_s": [r["time/rollout_s"] for r in rows],
                    "train_s": [r["time/train_s"] for r in rows],
                    "median": med,
                    "peak_rss_gib": peak,
                },
                f,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
