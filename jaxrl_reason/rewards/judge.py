"""Generative step judges for CAPO (Xie et al. 2025, arXiv 2508.02298): prompt and parser.

CAPO asks an LLM (a generative PRM) to critique every step of a response in one pass and
samples ``N`` critiques; each critique yields the set of steps it finds wrong, and a vote over
the ``N`` sets (:func:`jaxrl_reason.credit.process.capo_vote`) marks the tokens to penalise.
CAPO's own prompt is unreleased; :func:`judge_prompt` lists the problem and the numbered steps
and asks for one line per step, ``Step k: correct`` or ``Step k: wrong``.

:func:`parse_verdicts` reads a judgement into per-step verdicts in ``{+1 correct, -1 wrong,
0 abstain}``: steps the judgement does not mention (or mentions with neither word) abstain,
and text with no parseable verdict at all abstains on every step. It never raises.
Example: ``"Step 1: correct\\nStep 2: wrong\\nStep 3 is right"`` with 4 steps gives
``[+1, -1, +1, 0]``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

__all__ = ["judge_prompt", "parse_verdicts", "verdict_array"]

_WRONG = ("incorrect", "wrong", "error", "false", "invalid", "mistake")
_RIGHT = ("correct", "right", "true", "valid", "ok")
# "Step 2: wrong", "step 2 - correct", "Step 2 is incorrect", "2. wrong" (numbered lines).
_LINE = re.compile(
    r"(?:step\s*(\d+)|^\s*(\d+)[.)])\s*(?:[:\-\u2013=]|is|was)?\s*"
    r"(incorrect|wrong|error|false|invalid|mistake|correct|right|true|valid|ok)\b",
    re.IGNORECASE | re.MULTILINE,
)


def judge_prompt(problem: str, steps: Sequence[str]) -> str:
    """The judge's user message: the problem, the numbered steps (1-based) and the answer
    format. ``steps`` are the texts of the response's steps (its ``segment_id`` spans)."""
    body = "\n".join(f"Step {i + 1}: {s.strip()}" for i, s in enumerate(steps))
    return (
        "Check each step of this solution.\n\n"
        f"Problem: {problem}\n\nSolution:\n{body}\n\n"
        f"For each of the {len(steps)} steps write one line, exactly 'Step k: correct' or "
        "'Step k: wrong'."
    )


def parse_verdicts(text: str, num_steps: int) -> np.ndarray:
    """Per-step verdicts of one judgement: ``int8[num_steps]`` in ``{+1, -1, 0}``.

    Step numbers are 1-based in the text; the first verdict given for a step wins; numbers
    outside ``1 .. num_steps`` are ignored. Non-strings give all zeros (abstain).
    """
    out = np.zeros(num_steps, np.int8)
    if not isinstance(text, str):
        return out
    seen = set()
    for m in _LINE.finditer(text):
        k = int(m.group(1) or m.group(2)) - 1
        if not 0 <= k < num_steps or k in seen:
            continue
        seen.add(k)
        out[k] = -1 if m.group(3).lower() in _WRONG else 1
    return out


def verdict_array(judgements: Sequence[Sequence[str]], num_steps: int) -> np.ndarray:
    """``int8[B, N, S]`` verdicts of ``B`` responses' ``N`` judgements each (ragged ``N`` is
    padded with abstentions to the largest)."""
    n = max((len(j) for j in judgements), default=0)
    out = np.zeros((len(judgements), n, num_steps), np.int8)
    for b, js in enumerate(judgements):
        for i, t in enumerate(js):
            out[b, i] = parse_verdicts(t, num_steps)
    return out
