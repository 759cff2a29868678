"""A task = a sequence of examples + a prompt builder + an answer verifier.

Every task in this package subclasses :class:`Task`: random access to :class:`Example` s
(``len(task)``, ``task[i]``, iteration), ``build_prompt(example)`` -> chat messages that ask
for the final answer in the task's format, and ``verify(response, example)`` -> 1.0 / 0.0
through :mod:`jaxrl_reason.rewards.verify` (time-limited, never raises on garbage).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["BOXED_INSTRUCTION", "HASH_INSTRUCTION", "PROMPT_FORMATS", "Example", "Task"]

#: System instruction for GSM8K-style answers (the format of GSM8K's own solutions).
HASH_INSTRUCTION = (
    "Solve the problem step by step. At the end, write the final answer as a number on its "
    "own line after '####', for example:\n#### 42"
)
#: System instruction for MATH-style answers.
BOXED_INSTRUCTION = (
    "Solve the problem step by step. Put the final answer in \\boxed{}, for example: "
    "The answer is \\boxed{42}."
)
#: ``prompt_format`` -> the system instruction it uses.
PROMPT_FORMATS = {"hash": HASH_INSTRUCTION, "boxed": BOXED_INSTRUCTION}


@dataclasses.dataclass(frozen=True)
class Example:
    """One problem.

    Attributes:
      id: a stable identifier (``"gsm8k/test/17"``, ``"arith/47+38"``, MATH's ``unique_id``).
      prompt: the problem text (the user turn; the system turn comes from the task).
      answer: the gold final answer as a string (``"1,234"``, ``"\\frac{3}{4}"``).
      meta: anything else (the reference solution, level, subject, ...).
    """

    id: str
    prompt: str
    answer: str
    meta: Mapping[str, Any] = dataclasses.field(default_factory=dict)


class Task(Sequence[Example]):
    """Base class: subclasses set ``name`` and implement ``__len__`` and ``_get(i)``.

    Args:
      prompt_format: ``"hash"`` (``#### N``) or ``"boxed"`` (``\\boxed{}``): the instruction
        :meth:`build_prompt` puts in the system turn.
      verify_format: the extraction format :meth:`verify` uses (``"auto"``: ``####``, then
        ``\\boxed{}``, then "the answer is", then the last number; see
        ``rewards.extract.ANSWER_FORMATS``). Use the strict format with a format reward.
      system_prompt: overrides the instruction text.
      timeout_s: per-item verification time limit in seconds.
    """

    name: str = "task"

    def __init__(
        self,
        *,
        prompt_format: str = "hash",
        verify_format: str = "auto",
        system_prompt: str | None = None,
        timeout_s: float | None = None,
    ):
        from jaxrl_reason.rewards.extract import ANSWER_FORMATS

        if prompt_format not in PROMPT_FORMATS:
            raise ValueError(
                f"{type(self).__name__}: prompt_format={prompt_format!r}; "
                f"use one of {sorted(PROMPT_FORMATS)}"
            )
        if verify_format not in ANSWER_FORMATS:
            raise ValueError(
                f"{type(self).__name__}: verify_format={verify_format!r}; "
                f"use one of {ANSWER_FORMATS}"
            )
        self.prompt_format = prompt_format
        self.verify_format = verify_format
        self.system_prompt = (
            PROMPT_FORMATS[prompt_format] if system_prompt is None else system_prompt
        )
        self.timeout_s = timeout_s

    # --- sequence protocol -------------------------------------------------------------------
    def __len__(self) -> int:
        raise NotImplementedError

    def _get(self, index: int) -> Example:
        raise NotImplementedError

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        index = int(index)
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"{self.name}: index {index} out of range for {n} examples")
        return self._get(index % n)

    def __iter__(self) -> Iterator[Example]:
        for i in range(len(self)):
            yield self._get(i)

    # --- prompts and rewards -----------------------------------------------------------------
    def build_prompt(self, example: Example) -> list[dict[str, str]]:
        """Chat messages for one example: ``[{"role": "system", ...}, {"role": "user", ...}]``.

        The caller applies the tokenizer's chat template (``models`` layer). Pass
        ``system_prompt=""`` to the task to drop the system turn.
        """
        msgs = []
        if self.system_prompt:
            msgs.append({"role": "system", "content": self.system_prompt})
        msgs.append({"role": "user", "content": example.prompt})
        return msgs

    def _verify_kwargs(self) -> dict:
        kw: dict[str, Any] = {"fmt": self.verify_format}
        if self.timeout_s is not None:
            kw["timeout_s"] = self.timeout_s
        return kw

    def verify(self, response: str, example: Example) -> float:
        """1.0 when ``response``'s final answer equals ``example.answer``, else 0.0."""
        from jaxrl_reason.rewards.verify import verify

        return verify(response, example.answer, **self._verify_kwargs())

    def verify_batch(self, responses: Sequence[str], examples: Sequence[Example]) -> np.ndarray:
        """``float32[B]`` outcome rewards; ``examples[i]`` is the problem of ``responses[i]``."""
        from jaxrl_reason.rewards.verify import verify_batch

        return verify_batch(responses, [e.answer for e in examples], **self._verify_kwargs())

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, len={len(self)})"
