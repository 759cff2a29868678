"""The README's main job: GRPO on SmolLM2-135M-Instruct with generated 2-digit sums.

    python -m experiments.main [--workdir runs/smollm2_arith_grpo] [--config.x=y ...]

The same as ``python -m experiments.train --config experiments/configs/smollm2_arith_grpo.py``
with a default work directory; rerunning it resumes the run from its last checkpoint.
"""

from __future__ import annotations

import os
import sys

DEFAULT_CONFIG = os.path.join(os.path.dirname(__file__), "configs", "smollm2_arith_grpo.py")


def main(argv: list[str] | None = None) -> int:
    from experiments import train

    args = list(sys.argv[1:] if argv is None else argv)
    if not any(a == "--workdir" or a.startswith("--workdir=") for a in args):
        args += ["--workdir", os.path.join("runs", "smollm2_arith_grpo")]
    if not any(a == "--config" or a.startswith("--config=") for a in args):
        args += ["--config", DEFAULT_CONFIG]
    if "--resume" not in args:
        args.append("--resume")  # a no-op for a fresh workdir; continues an interrupted run
    return train.main(args)


if __name__ == "__main__":
    sys.exit(main())
