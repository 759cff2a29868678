"""Tools an environment can call: a safe calculator, the Python sandbox, BM25 search.

A :class:`Tool` maps the text argument the model wrote inside a call tag to the text the
model sees back; :meth:`Tool.__call__` never raises (an exception becomes
``"error: <message>"`` and sets the error flag), so a hostile or malformed call is an
observation, not a crash of the rollout.
"""

from __future__ import annotations

import ast
import dataclasses
import math
import operator
import re
from collections.abc import Callable

__all__ = [
    "CalculatorError",
    "Tool",
    "ToolOutput",
    "calculator",
    "calculator_tool",
    "python_tool",
    "safe_eval",
    "search_tool",
]


class CalculatorError(ValueError):
    """An expression the calculator refuses or cannot evaluate (the message says why)."""


#: Longest expression accepted (characters).
MAX_EXPR_CHARS = 512
#: Largest absolute exponent of ``**``.
MAX_EXPONENT = 1024
#: Largest integer result, in bits (about 1200 decimal digits).
MAX_INT_BITS = 4096
#: Deepest expression tree.
MAX_DEPTH = 64

_BINOPS: dict[type, Callable] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}


def _check(x):
    if isinstance(x, bool):
        raise CalculatorError("booleans are not numbers here")
    if isinstance(x, int):
        if x.bit_length() > MAX_INT_BITS:
            raise CalculatorError("result too large")
        return x
    if isinstance(x, float):
        if not math.isfinite(x):
            raise CalculatorError("overflow (result is not finite)")
        return x
    raise CalculatorError(f"unsupported value {type(x).__name__}")


def _bits(x) -> float:
    return x.bit_length() if isinstance(x, int) else math.log2(abs(x) + 1) + 1


def _binop(op: ast.operator, a, b):
    kind = type(op)
    if kind not in _BINOPS:
        raise CalculatorError(f"operator {kind.__name__} is not allowed")
    if kind in (ast.Div, ast.FloorDiv, ast.Mod) and b == 0:
        raise CalculatorError("division by zero")
    if kind is ast.Pow:
        if abs(b) > MAX_EXPONENT:
            raise CalculatorError(f"exponent {b} exceeds {MAX_EXPONENT}")
        if isinstance(b, int) and b > 0 and _bits(a) * b > MAX_INT_BITS + 64:
            raise CalculatorError("result too large")
        if a == 0 and b < 0:
            raise CalculatorError("division by zero")
        if a < 0 and isinstance(b, float) and not b.is_integer():
            raise CalculatorError("negative base with a fractional exponent")
    if kind is ast.Mult and _bits(a) + _bits(b) > MAX_INT_BITS + 64:
        raise CalculatorError("result too large")
    if kind is ast.Div and isinstance(a, int) and isinstance(b, int) and a % b == 0:
        return _check(a // b)  # exact integer division stays an integer
    try:
        return _check(_BINOPS[kind](a, b))
    except OverflowError as e:
        raise CalculatorError(f"overflow ({e})") from None


def _eval(node: ast.AST, depth: int = 0):
    if depth > MAX_DEPTH:
        raise CalculatorError("expression nested too deeply")
    if isinstance(node, ast.Expression):
        return _eval(node.body, depth + 1)
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, int | float):
            raise CalculatorError(f"only numbers are allowed, got {node.value!r}")
        return _check(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        v = _eval(node.operand, depth + 1)
        return -v if isinstance(node.op, ast.USub) else v
    if isinstance(node, ast.BinOp):
        return _binop(node.op, _eval(node.left, depth + 1), _eval(node.right, depth + 1))
    raise CalculatorError(
        f"{type(node).__name__} is not allowed (numbers and + - * / // % ** only)"
    )


def safe_eval(expr: str) -> int | float:
    """Evaluates an arithmetic expression without ``eval``: parses it with :mod:`ast` and
    walks the tree, allowing only numeric literals, ``+ - * / // % **``, unary ``+``/``-``
    and parentheses.

    Bounds: at most :data:`MAX_EXPR_CHARS` characters and :data:`MAX_DEPTH` levels,
    ``|exponent| <= MAX_EXPONENT``, integer results within :data:`MAX_INT_BITS` bits (checked
    *before* computing a power or product), finite floats. ``a / b`` of integers that divide
    exactly is an integer. ``^`` is read as ``**``; a comma before three digits is a thousands
    separator (``1,234`` -> ``1234``).

    Raises:
      CalculatorError: anything else (names, calls, attributes, too large, ``1/0``, syntax).
    """
    if not isinstance(expr, str):
        raise CalculatorError("expression must be a string")
    expr = expr.strip().replace("^", "**").replace("×", "*").replace("÷", "/")
    if len(expr) > MAX_EXPR_CHARS:
        raise CalculatorError(f"expression longer than {MAX_EXPR_CHARS} characters")
    if not expr:
        raise CalculatorError("empty expression")
    expr = re.sub(r"(?<=\d),(?=\d{3}\b)", "", expr)
    try:
        tree = ast.parse(expr, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as e:
        raise CalculatorError(f"invalid expression ({type(e).__name__})") from None
    try:
        return _eval(tree)
    except RecursionError:
        raise CalculatorError("expression nested too deeply") from None


def format_number(x: int | float) -> str:
    """``int`` -> its digits; ``float`` -> 12 significant digits, integral floats as ints."""
    if isinstance(x, float):
        if x.is_integer() and abs(x) < 1e15:
            return str(int(x))
        return format(x, ".12g")
    return str(x)


def calculator(expr: str) -> str:
    """The calculator tool: ``"3*(4+5)"`` -> ``"27"``; errors -> ``"error: <reason>"``."""
    try:
        return format_number(safe_eval(expr))
    except CalculatorError as e:
        return f"error: {e}"


@dataclasses.dataclass(frozen=True)
class ToolOutput:
    """What one tool call returned: the observation text and whether it failed."""

    text: str
    error: bool = False


@dataclasses.dataclass(frozen=True)
class Tool:
    """A named text -> text tool.

    Attributes:
      name: the tool's name (its call tag ``<name>...</name>`` and ``<tool>name: ...</tool>``).
      fn: ``fn(argument) -> str`` or ``-> ToolOutput``; may raise (caught by ``__call__``).
        A ``str`` result starting with ``"error:"`` counts as an error.
      description: one line for the system prompt.
      example: an example argument for the system prompt.
    """

    name: str
    fn: Callable[[str], str | ToolOutput]
    description: str = ""
    example: str = ""

    def __call__(self, argument: str) -> ToolOutput:
        """Runs the tool; any exception becomes ``ToolOutput("error: ...", error=True)``."""
        try:
            out = self.fn(argument)
        except Exception as e:  # noqa: BLE001 - a tool failure is an observation
            msg = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
            return ToolOutput(f"error: {type(e).__name__}" + (f": {msg}" if msg else ""), True)
        if isinstance(out, ToolOutput):
            return out
        out = str(out)
        return ToolOutput(out, out.startswith("error:"))


def calculator_tool() -> Tool:
    """:func:`calculator` as a :class:`Tool` named ``"calculator"``."""
    return Tool(
        "calculator",
        calculator,
        "evaluates an arithmetic expression (numbers, + - * / // % ** and parentheses)",
        "3*(4+5)",
    )


def _strip_fences(code: str) -> str:
    s = code.strip("\n")
    if s.lstrip().startswith("```"):
        lines = s.strip().splitlines()
        lines = lines[1:]
        if lines and lines[-1].strip().startswith("```"):
            lines = lines[:-1]
        s = "\n".join(lines)
    return s


def python_tool(*, timeout_s: float = 5.0, memory_mb: int = 512) -> Tool:
    """The sandboxed interpreter (:func:`jaxrl_reason.envs.sandbox.run_python`) as a
    :class:`Tool` named ``"python"``: the observation is the printed stdout, or stdout plus
    ``"error: <reason>"``. Markdown code fences around the code are removed."""
    from jaxrl_reason.envs.sandbox import run_python

    def fn(code: str) -> ToolOutput:
        r = run_python(_strip_fences(code), timeout_s=timeout_s, memory_mb=memory_mb)
        if r.ok:
            return ToolOutput(r.stdout if r.stdout else "(no output; use print())")
        text = (r.stdout + ("\n" if r.stdout and not r.stdout.endswith("\n") else "")) + (
            f"error: {r.error}"
        )
        return ToolOutput(text, True)

    return Tool(
        "python",
        fn,
        "runs a Python script (standard library only, no files outside its directory, no "
        "network) and returns what it prints",
        "print(sum(range(10)))",
    )


def search_tool(retriever, k: int = 3) -> Tool:
    """A BM25 :class:`~jaxrl_reason.envs.retrieval.BM25Retriever` as a :class:`Tool` named
    ``"search"``: the observation is the top-``k`` passages in Search-R1's format
    (``Doc 1(Title: ...) text``; arXiv 2503.09516)."""
    from jaxrl_reason.envs.retrieval import format_passages

    def fn(query: str) -> ToolOutput:
        q = query.strip()
        if not q:
            return ToolOutput("error: empty search query", True)
        hits = retriever.search(q, k)
        if not hits:
            return ToolOutput("no results")
        return ToolOutput(format_passages(hits))

    return Tool("search", fn, "searches the document collection and returns passages", "query")
