"""Generated arithmetic chains: ``Start with 37. Add 25, then multiply by 3.`` with true steps.

A multi-step task whose every intermediate value is known, so a response can be graded per
step (an oracle process reward), not only on its final answer. A problem is a start value and
``L`` operations ``(op_k, b_k)``; its steps are ``v_0 = start``, ``v_k = v_{k-1} op_k b_k`` and
the answer is ``v_L``. Operands lie in ``[low, high]``; every intermediate value is kept in
``[min_value, max_value]`` (non-negative, bounded) by drawing each operation among those whose
result stays in range (a seeded, vectorised draw: see :func:`sample_chains`). A length-1 chain
``Start with a. Add b.`` is the same problem as :class:`~jaxrl_reason.data.ArithmeticTask`'s
``a + b`` (and is held out exactly when that problem is held out there).

Splits. As in :mod:`jaxrl_reason.data.arithmetic`, a problem's split is a function of the
problem alone (:func:`chain_split`: a splitmix64 hash of ``(op_1, start, b_1, op_2, b_2, ...)``
mod 10_000 against ``heldout_fraction``), so train and test are disjoint whatever the seed,
lengths, ranges or sizes. The seed only picks and orders problems within a split.

Steps of a response (the oracle step verifier, :func:`parse_steps`). The response is read line
by line; a *step line* is a line (the text before any ``####`` on it) that either contains
``=`` and a number, or contains a computation ``<number> <op> <number>`` (op one of
``+ - * x × · /``). Its value is the first number after the last ``=`` (fallback: the last
number on the line). Lines without a computation (chatter, ``Start with 37.``, ``#### 48``)
are not steps. Step ``k`` of the response is its ``k``-th step line; its character span runs
from the start of that line (from 0 for the first step, so a preamble belongs to step 0) to the
start of the next step line, and the last step's span runs to the end of the response (the
final-answer line belongs to it). Step ``k`` is right when its value equals the true ``v_{k+1}``.
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Any

import numpy as np

from jaxrl_reason.data.arithmetic import _BUCKETS, _OP_CODE, _mix64
from jaxrl_reason.data.base import Example, Task

__all__ = [
    "DEFAULT_TEMPLATE",
    "ArithChainTask",
    "chain_expression",
    "chain_split",
    "describe_chain",
    "first_error_step",
    "parse_steps",
    "sample_chains",
    "step_labels",
]

_OPS = ("+", "-", "*")
_WORDS = {"+": "add {b}", "-": "subtract {b}", "*": "multiply by {b}"}
#: The default user prompt: ``{problem}`` is the chain in words (:func:`describe_chain`).
DEFAULT_TEMPLATE = (
    "Compute step by step. {problem} Write one equation per line, "
    "then #### followed by the final answer."
)
#: Default number of problems per split when ``num_examples`` is None.
_DEFAULT_NUM = {"train": 10_000, "test": 1_000}

# --------------------------------------------------------------------------------------------
# Problems: sampling and the split.


def chain_split(
    start: np.ndarray,
    op_codes: np.ndarray,
    operands: np.ndarray,
    heldout_fraction: float,
    split_salt: int = 0,
) -> np.ndarray:
    """True where the chain belongs to the held-out split (vectorised over chains).

    Args:
      start: ``int[M]`` start values.
      op_codes: ``int[M, L]`` operation codes (``arithmetic._OP_CODE``: ``+`` 1, ``-`` 2,
        ``*`` 3).
      operands: ``int[M, L]`` operands, ``|b| < 2**31``.
      heldout_fraction: expected fraction held out, in ``[0, 1]``.
      split_salt: changes the partition (use the same value for train and test).
    Returns:
      ``bool[M]``. For ``L == 1`` it equals :func:`~jaxrl_reason.data.problem_split` of
      ``start op b``: the hash chain is the same.
    """
    start = np.asarray(start, np.int64).astype(np.uint64)
    op_codes = np.asarray(op_codes, np.int64).astype(np.uint64)
    operands = np.asarray(operands, np.int64).astype(np.uint64)
    salt = np.uint64(split_salt)
    key = _mix64(salt ^ _mix64(op_codes[:, 0]))
    key = _mix64(key ^ start)
    key = _mix64(key ^ operands[:, 0])
    for k in range(1, op_codes.shape[1]):
        key = _mix64(key ^ _mix64(op_codes[:, k]))
        key = _mix64(key ^ operands[:, k])
    return key % np.uint64(_BUCKETS) < np.uint64(round(heldout_fraction * _BUCKETS))


def _apply(op: str, v: np.ndarray, b: np.ndarray) -> np.ndarray:
    return v + b if op == "+" else v - b if op == "-" else v * b


def sample_chains(
    rng: np.random.Generator,
    num: int,
    length: int,
    *,
    low: int,
    high: int,
    ops: tuple[str, ...],
    min_value: int,
    max_value: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Draws ``num`` chains of ``length`` operations whose intermediate values stay in range.

    The start is uniform in ``[low, high]``; each step draws an operation uniformly among those
    with at least one operand ``b in [low, high]`` keeping the value in
    ``[min_value, max_value]``, then ``b`` uniformly among those operands. Chains that reach a
    value with no valid operation (or a start outside the range) are dropped, so fewer than
    ``num`` may come back.

    Returns:
      ``(start int64[M], op_idx int64[M, L], operands int64[M, L], steps int64[M, L])`` with
      ``M <= num``; ``op_idx`` indexes ``ops`` and ``steps[:, k]`` is the value after step k.
    """
    vals = np.arange(low, high + 1, dtype=np.int64)
    v = rng.integers(low, high + 1, size=num, dtype=np.int64)
    start = v.copy()
    alive = (v >= min_value) & (v <= max_value)
    op_idx = np.zeros((num, length), np.int64)
    operands = np.zeros((num, length), np.int64)
    steps = np.zeros((num, length), np.int64)
    for k in range(length):
        valid = []
        for op in ops:
            res = _apply(op, v[:, None], vals[None, :])
            valid.append((res >= min_value) & (res <= max_value))
        valid = np.stack(valid, 1)  # [M, n_ops, n_vals]
        has = valid.any(-1)  # [M, n_ops]
        alive &= has.any(-1)
        o = np.argmax(np.where(has, rng.random(has.shape), -1.0), axis=-1)
        ok = valid[np.arange(num), o]  # [M, n_vals]
        j = np.argmax(np.where(ok, rng.random(ok.shape), -1.0), axis=-1)
        b = vals[j]
        new = np.select([o == i for i in range(len(ops))], [_apply(op, v, b) for op in ops])
        v = np.where(alive, new, v)
        op_idx[:, k], operands[:, k], steps[:, k] = o, b, v
    return start[alive], op_idx[alive], operands[alive], steps[alive]


def describe_chain(start: int, ops: list[str], operands: list[int]) -> str:
    """The chain in words: ``Start with 37. Add 25, then multiply by 3, then subtract 14.``"""
    parts = [_WORDS[op].format(b=b) for op, b in zip(ops, operands, strict=True)]
    text = ", then ".join(parts)
    return f"Start with {start}. {text[0].upper()}{text[1:]}."


def chain_expression(start: int, ops: list[str], operands: list[int]) -> str:
    """The chain as a left-nested expression: ``((37 + 25) * 3) - 14`` (``37 + 25`` for one
    operation)."""
    expr = str(start)
    for k, (op, b) in enumerate(zip(ops, operands, strict=True)):
        expr = f"({expr} {op} {b})" if k < len(ops) - 1 else f"{expr} {op} {b}"
    return expr


# --------------------------------------------------------------------------------------------
# Responses: steps, their values and labels.

_NUM_RE = re.compile(r"[-\u2212]?\d+(?:,\d{3})*(?:\.\d+)?")
_NUM = r"[-\u2212]?\d+(?:\.\d+)?"
_COMPUTATION_RE = re.compile(rf"{_NUM}\s*(?:[-+*/x×·÷\u2212])\s*{_NUM}")
# Numbers longer than this are garbage (and would make Fraction slow).
_MAX_DIGITS = 40


def _to_value(s: str) -> Fraction | None:
    s = s.replace(",", "").replace("\u2212", "-")
    if len(s) > _MAX_DIGITS:
        return None
    try:
        return Fraction(s)
    except (ValueError, ZeroDivisionError):
        return None


def _line_value(line: str) -> Fraction | None | bool:
    """The step value of one line, None for a step line without a parsable value, or False
    when the line is not a step line (see the module doc)."""
    body = line.split("####", 1)[0]
    if "=" in body and _NUM_RE.search(body):
        after = _NUM_RE.search(body.rsplit("=", 1)[1])
        if after is not None:
            return _to_value(after.group(0))
    elif not _COMPUTATION_RE.search(body):
        return False
    nums = _NUM_RE.findall(body)
    return _to_value(nums[-1]) if nums else None


def parse_steps(response: str) -> list[tuple[int, int, Fraction | None]]:
    """The steps of a response: ``[(start, end, value), ...]`` (see the module doc).

    Spans are character offsets into ``response`` and partition ``[0, len(response))`` when
    there is at least one step; ``value`` is the step's number (None when unparsable). A
    response with no step line gives ``[]``. Never raises (non-strings give ``[]``).
    """
    if not isinstance(response, str):
        return []
    starts: list[int] = []
    values: list[Fraction | None] = []
    pos = 0
    for line in response.splitlines(keepends=True):
        if line.strip():
            val = _line_value(line)
            if val is not False:
                starts.append(pos)
                values.append(val)  # type: ignore[arg-type]
        pos += len(line)
    if not starts:
        return []
    starts[0] = 0
    ends = starts[1:] + [len(response)]
    return list(zip(starts, ends, values, strict=True))


def step_labels(response: str, steps: list[int]) -> np.ndarray:
    """``float32[S]`` oracle step labels: 1.0 where the response's k-th step value is
    ``steps[k]``, 0.0 otherwise (missing steps are wrong; extra steps are ignored)."""
    got = [v for _, _, v in parse_steps(response)]
    out = np.zeros(len(steps), np.float32)
    for k, true in enumerate(steps):
        if k < len(got) and got[k] is not None and got[k] == true:
            out[k] = 1.0
    return out


def first_error_step(response: str, steps: list[int]) -> int:
    """Index of the first wrong (or missing) step of ``response``, or -1 when all are right."""
    wrong = np.flatnonzero(step_labels(response, steps) == 0.0)
    return int(wrong[0]) if len(wrong) else -1


# --------------------------------------------------------------------------------------------
# The task.


class ArithChainTask(Task):
    """Chains of ``+ - *`` on small integers, answered one operation per line.

    The defaults (lengths 1-3 interleaved, operands 1-9, ``+ -``, :data:`DEFAULT_TEMPLATE`)
    are a mix SmolLM2-135M-Instruct answers 24 % of greedily (54 % / 0 % / 17 % by length;
    ``experiments/arith_chain_base.py``), a curriculum with room for RL.
    ``lengths=(1,), low=10, high=99, ops="+"`` are exactly the arithmetic task's sums.

    ``Example.meta``: ``start`` (int), ``ops`` (list of ``"+"``/``"-"``/``"*"``),
    ``operands`` (list of int) and ``steps`` (list of int: the value after each operation; the
    last is the answer), all of length ``S`` = the chain length.

    Args:
      split: ``"train"`` or ``"test"`` (the held-out split).
      seed: picks and orders the problems.
      lengths: chain lengths to mix; example ``i`` has length ``lengths[i % len(lengths)]``
        (so any prefix of the task is balanced across lengths).
      low, high: inclusive operand (and start) range.
      ops: operations, a subset of ``("+", "-", "*")``.
      num_examples: how many problems; None = 10_000 (train) / 1_000 (test). When a length's
        split holds fewer distinct problems than its share (1-digit single operations), its
        problems repeat in the same seeded order.
      min_value, max_value: the range every intermediate value stays in (default 0 and
        ``max(99, high * high)``).
      heldout_fraction: fraction of the problem space reserved for held-out evaluation.
      split_salt: selects a different (still disjoint) train / held-out partition.
      template: the user prompt, formatted with ``problem`` (the chain in words), ``start``,
        ``num_ops``, ``first`` (the first operation as ``37 + 25``) and ``expression``
        (:func:`chain_expression`: ``(37 + 25) * 3``).
      **task_kwargs: ``prompt_format``, ``verify_format``, ``system_prompt``, ``timeout_s``
        (see :class:`Task`).
    """

    name = "arith_chain"

    def __init__(
        self,
        split: str = "train",
        *,
        seed: int = 0,
        lengths: tuple[int, ...] | list[int] = (1, 2, 3),
        low: int = 1,
        high: int = 9,
        ops: tuple[str, ...] | list[str] | str = ("+", "-"),
        num_examples: int | None = None,
        min_value: int = 0,
        max_value: int | None = None,
        heldout_fraction: float = 0.1,
        split_salt: int = 0,
        template: str = DEFAULT_TEMPLATE,
        **task_kwargs,
    ):
        super().__init__(**task_kwargs)
        cls = type(self).__name__
        if split not in ("train", "test"):
            raise ValueError(f"{cls}: split={split!r}; use 'train' or 'test'")
        ops = tuple(ops)
        if not ops or any(o not in _OPS for o in ops) or len(set(ops)) != len(ops):
            raise ValueError(f"{cls}: ops={ops!r}; distinct, each one of {list(_OPS)}")
        lengths = tuple(int(n) for n in lengths)
        if not lengths or min(lengths) < 1:
            raise ValueError(f"{cls}: lengths={lengths!r}; need chain lengths >= 1")
        if not (isinstance(low, int) and isinstance(high, int) and 0 <= low <= high < 2**31):
            raise ValueError(f"{cls}: need integers 0 <= low <= high, got {low}, {high}")
        max_value = max(99, high * high) if max_value is None else int(max_value)
        if not 0 <= min_value <= max_value < 2**62:
            raise ValueError(
                f"{cls}: need 0 <= min_value <= max_value, got {min_value}, {max_value}"
            )
        if not 0.0 < heldout_fraction < 1.0:
            raise ValueError(f"{cls}: heldout_fraction={heldout_fraction} not in (0, 1)")
        if num_examples is None:
            num_examples = _DEFAULT_NUM[split]
        if num_examples <= 0:
            raise ValueError(f"{cls}: num_examples={num_examples} must be > 0 or None")
        self.split, self.name = split, f"arith_chain/{split}"
        self.seed, self.lengths, self.low, self.high, self.ops = seed, lengths, low, high, ops
        self.min_value, self.max_value = min_value, max_value
        self.heldout_fraction, self.split_salt, self.template = (
            heldout_fraction,
            split_salt,
            template,
        )
        per_len: dict[int, list[tuple]] = {}
        for length in sorted(set(lengths)):
            share = sum(1 for i in range(num_examples) if lengths[i % len(lengths)] == length)
            per_len[length] = self._problems_of_length(length, share)
        taken = dict.fromkeys(per_len, 0)
        self._problems: list[tuple] = []
        for i in range(num_examples):
            length = lengths[i % len(lengths)]
            self._problems.append(per_len[length][taken[length]])
            taken[length] += 1

    def _problems_of_length(self, length: int, num: int) -> list[tuple]:
        """``num`` problems ``(start, op_idx, operands, steps)`` of one length in this split:
        distinct while the split has them, then repeating in order."""
        if num == 0:
            return []
        rng = np.random.default_rng([self.seed, 0xC4A1, length])
        codes = np.array([_OP_CODE[o] for o in self.ops], np.int64)
        found: dict[tuple, tuple] = {}
        stale = 0  # draws since the last new problem
        while len(found) < num and stale < max(20 * len(found), 2_000):
            m = 2 * (num - len(found)) + 64
            start, o, b, steps = sample_chains(
                rng,
                m,
                length,
                low=self.low,
                high=self.high,
                ops=self.ops,
                min_value=self.min_value,
                max_value=self.max_value,
            )
            held = chain_split(start, codes[o], b, self.heldout_fraction, self.split_salt)
            keep = held if self.split == "test" else ~held
            stale += m
            for row in np.flatnonzero(keep):
                key = (int(start[row]), tuple(o[row].tolist()), tuple(b[row].tolist()))
                if key not in found and len(found) < num:
                    found[key] = (*key, tuple(steps[row].tolist()))
                    stale = 0
        if not found:
            raise ValueError(
                f"{type(self).__name__}: no length-{length} chain in the {self.split} split "
                f"with ops={self.ops}, operands {self.low}..{self.high} and values in "
                f"[{self.min_value}, {self.max_value}]; widen the ranges"
            )
        uniq = list(found.values())
        return [uniq[i % len(uniq)] for i in range(num)]

    def __len__(self) -> int:
        return len(self._problems)

    def _get(self, index: int) -> Example:
        start, o, b, steps = self._problems[index]
        ops = [self.ops[i] for i in o]
        chain = "".join(f"{op}{x}" for op, x in zip(ops, b, strict=True))
        problem = describe_chain(start, ops, list(b))
        return Example(
            id=f"arith_chain/{start}{chain}",
            prompt=self.template.format(
                problem=problem,
                start=start,
                num_ops=len(ops),
                first=f"{start} {ops[0]} {b[0]}",
                expression=chain_expression(start, ops, list(b)),
            ),
            answer=str(steps[-1]),
            meta={"start": start, "ops": ops, "operands": list(b), "steps": list(steps)},
        )

    def problems(self) -> set[tuple[int, tuple[str, ...], tuple[int, ...]]]:
        """The split's distinct problems as ``(start, ops, operands)`` tuples."""
        return {(s, tuple(self.ops[i] for i in o), b) for s, o, b, _ in self._problems}

    # --- the oracle step verifier -------------------------------------------------------------
    def split_steps(self, response: str, max_steps: int | None = None) -> list[tuple[int, int]]:
        """Character spans ``[(start, end), ...]`` of the response's steps (module doc).

        One span per step line; they partition the response (a preamble joins the first step,
        the final-answer line the last). ``max_steps`` merges the spans beyond the first
        ``max_steps`` into the last kept one (so span ``k`` lines up with ``step_labels[k]``
        when ``max_steps`` is the chain length). No step line gives ``[]``.
        """
        spans = [(s, e) for s, e, _ in parse_steps(response)]
        if max_steps is not None and len(spans) > max_steps >= 1:
            spans = spans[: max_steps - 1] + [(spans[max_steps - 1][0], spans[-1][1])]
        return spans

    def step_labels(self, response: str, example: Example) -> np.ndarray:
        """``float32[S]``: 1.0 where the response's k-th step value is right (module doc)."""
        return step_labels(response, _steps(example))

    def first_error_step(self, response: str, example: Example) -> int:
        """Index of the first wrong or missing step, or -1 when every step is right."""
        return first_error_step(response, _steps(example))


def _steps(example: Any) -> list[int]:
    return list(example.meta["steps"])
