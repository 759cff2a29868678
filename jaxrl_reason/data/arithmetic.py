"""Generated arithmetic: ``What is a <op> b?`` with seeded, disjoint train / held-out splits.

The embedded default task: no download, any size, exact answers. A problem's split is a
function of the problem alone, ``hash(a, op, b, split_salt) mod 10_000 < heldout_fraction``,
so no held-out problem can appear in train whatever the seed, ranges or number of examples
(the disjointness is structural, not a property of one sample). The seed only orders the
problems within a split.
"""

from __future__ import annotations

import numpy as np

from jaxrl_reason.data.base import Example, Task

__all__ = ["ArithmeticTask", "problem_split"]

_OPS = {"+": np.add, "-": np.subtract, "*": np.multiply}
_OP_CODE = {"+": 1, "-": 2, "*": 3}
_BUCKETS = 10_000
# Above this many (a, op, b) combinations the space is sampled instead of enumerated.
_ENUMERATE_LIMIT = 4_000_000

_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser (Steele et al., 2014): a well-mixed uint64 hash, vectorised."""
    x = np.asarray(x, dtype=np.uint64)
    with np.errstate(over="ignore"):
        x = (x + np.uint64(0x9E3779B97F4A7C15)) & _M64
        x = ((x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _M64
        x = ((x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _M64
        return x ^ (x >> np.uint64(31))


def problem_split(
    a: np.ndarray, op: str, b: np.ndarray, heldout_fraction: float, split_salt: int = 0
) -> np.ndarray:
    """True where the problem ``a op b`` belongs to the held-out split (vectorised).

    Args:
      a, b: integer operands (any shape, broadcast together), ``|a|, |b| < 2**31``.
      op: ``"+"``, ``"-"`` or ``"*"``.
      heldout_fraction: expected fraction of problems held out, in ``[0, 1]``.
      split_salt: changes the split (use the same value for train and held-out!).
    Returns:
      bool array of the broadcast shape.
    """
    a64 = np.asarray(a, dtype=np.int64).astype(np.uint64)
    b64 = np.asarray(b, dtype=np.int64).astype(np.uint64)
    key = _mix64(np.uint64(split_salt) ^ _mix64(np.uint64(_OP_CODE[op])))
    key = _mix64(key ^ a64)
    key = _mix64(key ^ b64)
    bucket = key % np.uint64(_BUCKETS)
    return bucket < np.uint64(round(heldout_fraction * _BUCKETS))


class ArithmeticTask(Task):
    """``What is a <op> b?`` problems, answer ``str(a op b)``.

    Args:
      split: ``"train"`` or ``"test"`` (the held-out split).
      seed: orders the problems (and picks them when the space is sampled).
      low, high: inclusive operand range (default 2-digit: 10..99).
      ops: operations, a subset of ``("+", "-", "*")``.
      num_examples: how many problems; None = the whole split when the space is enumerable
        (2-digit, 3 ops: ~21.9k train / ~2.4k held out at the default fraction).
      heldout_fraction: fraction of the problem space reserved for held-out evaluation.
      split_salt: selects a different (still disjoint) train / held-out partition.
      allow_negative: if False, ``a - b`` is only generated with ``a >= b``.
      template: the question text, formatted with ``a``, ``op``, ``b``.
      **task_kwargs: ``prompt_format``, ``verify_format``, ``system_prompt``, ``timeout_s``
        (see :class:`Task`).
    """

    name = "arithmetic"

    def __init__(
        self,
        split: str = "train",
        *,
        seed: int = 0,
        low: int = 10,
        high: int = 99,
        ops: tuple[str, ...] | list[str] = ("+", "-", "*"),
        num_examples: int | None = None,
        heldout_fraction: float = 0.1,
        split_salt: int = 0,
        allow_negative: bool = True,
        template: str = "What is {a} {op} {b}?",
        **task_kwargs,
    ):
        super().__init__(**task_kwargs)
        if split not in ("train", "test"):
            raise ValueError(f"ArithmeticTask: split={split!r}; use 'train' or 'test'")
        ops = tuple(ops)
        bad = [o for o in ops if o not in _OPS]
        if not ops or bad:
            raise ValueError(f"ArithmeticTask: ops={ops!r}; each must be one of {list(_OPS)}")
        if len(set(ops)) != len(ops):
            raise ValueError(f"ArithmeticTask: ops={ops!r} has duplicates")
        if not (isinstance(low, int) and isinstance(high, int) and low <= high):
            raise ValueError(f"ArithmeticTask: need integers low <= high, got {low}, {high}")
        if max(abs(low), abs(high)) >= 2**31:
            raise ValueError("ArithmeticTask: operands must satisfy |x| < 2**31")
        if not 0.0 < heldout_fraction < 1.0:
            raise ValueError(f"ArithmeticTask: heldout_fraction={heldout_fraction} not in (0, 1)")
        if num_examples is not None and num_examples <= 0:
            raise ValueError(f"ArithmeticTask: num_examples={num_examples} must be > 0 or None")
        self.split = split
        self.name = f"arithmetic/{split}"
        self.seed, self.low, self.high, self.ops = seed, low, high, ops
        self.heldout_fraction, self.split_salt = heldout_fraction, split_salt
        self.allow_negative, self.template = allow_negative, template
        n = high - low + 1
        if n * n * len(ops) <= _ENUMERATE_LIMIT:
            a, op_idx, b = self._enumerate()
        else:
            if num_examples is None:
                raise ValueError(
                    f"ArithmeticTask: {n}^2 * {len(ops)} problems are too many to enumerate; "
                    "set num_examples"
                )
            a, op_idx, b = self._sample(num_examples)
        if num_examples is not None:
            if num_examples > len(a):
                raise ValueError(
                    f"ArithmeticTask: num_examples={num_examples} but the {split} split has "
                    f"only {len(a)} problems; widen low/high or lower num_examples"
                )
            a, op_idx, b = a[:num_examples], op_idx[:num_examples], b[:num_examples]
        self._a, self._op, self._b = a, op_idx, b

    def _in_split(self, a: np.ndarray, op: str, b: np.ndarray) -> np.ndarray:
        held = problem_split(a, op, b, self.heldout_fraction, self.split_salt)
        keep = held if self.split == "test" else ~held
        if op == "-" and not self.allow_negative:
            keep &= a >= b
        return keep

    def _enumerate(self):
        vals = np.arange(self.low, self.high + 1, dtype=np.int64)
        aa, bb = np.meshgrid(vals, vals, indexing="ij")
        aa, bb = aa.ravel(), bb.ravel()
        parts = []
        for k, op in enumerate(self.ops):
            keep = self._in_split(aa, op, bb)
            parts.append((aa[keep], np.full(keep.sum(), k, np.int64), bb[keep]))
        a = np.concatenate([p[0] for p in parts])
        o = np.concatenate([p[1] for p in parts])
        b = np.concatenate([p[2] for p in parts])
        perm = np.random.default_rng([self.seed, 0xA817]).permutation(len(a))
        return a[perm], o[perm], b[perm]

    def _sample(self, num: int):
        rng = np.random.default_rng([self.seed, 0xA817])
        seen: set[tuple[int, int, int]] = set()
        out_a, out_o, out_b = [], [], []
        while len(out_a) < num:
            m = 2 * (num - len(out_a)) + 64
            a = rng.integers(self.low, self.high + 1, size=m, dtype=np.int64)
            b = rng.integers(self.low, self.high + 1, size=m, dtype=np.int64)
            o = rng.integers(0, len(self.ops), size=m)
            keep = np.zeros(m, bool)
            for k, op in enumerate(self.ops):
                sel = o == k
                keep[sel] = self._in_split(a[sel], op, b[sel])
            for ai, oi, bi in zip(a[keep], o[keep], b[keep], strict=True):
                t = (int(ai), int(oi), int(bi))
                if t not in seen and len(out_a) < num:
                    seen.add(t)
                    out_a.append(t[0])
                    out_o.append(t[1])
                    out_b.append(t[2])
        return np.array(out_a), np.array(out_o), np.array(out_b)

    def __len__(self) -> int:
        return len(self._a)

    def _get(self, index: int) -> Example:
        a, b, op = int(self._a[index]), int(self._b[index]), self.ops[int(self._op[index])]
        ans = int(_OPS[op](a, b))
        return Example(
            id=f"arith/{a}{op}{b}",
            prompt=self.template.format(a=a, op=op, b=b),
            answer=str(ans),
            meta={"a": a, "b": b, "op": op},
        )

    def problems(self) -> set[tuple[int, str, int]]:
        """The split's problems as ``(a, op, b)`` tuples (for disjointness checks)."""
        return {
            (int(a), self.ops[int(o)], int(b))
            for a, o, b in zip(self._a, self._op, self._b, strict=True)
        }
