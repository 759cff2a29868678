"""Canonical answer keys: one hashable string per equivalence class of final answers.

Exploration bonuses count answers (``N(x, a)``), EMPO clusters them, TTRL and maj@k vote over
them. All of these need ``1/2``, ``0.5``, ``\\frac{1}{2}`` and ``2/4`` to be *one* answer, i.e.
the equivalence the correctness verifier uses. We get it from ``math_verify.parse`` (the parser
the verifier uses) followed by an exact, bounded normalisation of the SymPy result:

* every ``Float`` becomes the exact ``Rational`` of its decimal string (``0.50 -> 1/2``,
  ``3.0 -> 3``, ``-0.0 -> 0``, ``1,234.50 -> 2469/2``), so trailing zeros and signed zero vanish;
* unevaluated arithmetic (``2/4``, ``5\\%``) is folded when that is provably cheap (small
  tree, small exponents; no ``doit``, so integrals and limits are never run); otherwise the
  parsed form is kept, so ``2^{2^{100}}`` never hangs;
* the key is ``str(expr)`` (SymPy's canonical print: ``"1/2"``, ``"1234"``, ``"sqrt(2)"``,
  ``"{1, 2}"``, ``"Eq(x, 5)"``).

Thousands separators (``1,234``, ``1{,}234``, ``1\\,234``) are removed before parsing
(math_verify reads ``1\\,234`` as ``1 + 234``). Bare LaTeX without math delimiters
(``\\sqrt{2}``, ``\\dfrac{3}{4}``) is wrapped in ``$...$``: math_verify only reads LaTeX
inside delimiters.

**No answer.** Anything without a parsable mathematical answer (empty, ``None``, garbage,
parse time-out, over-long input) maps to :data:`NONE_KEY` ``"<none>"``. It is one shared
outcome: exploration counts it like any other answer (so repeated failures to answer get a
shrinking bonus), TTRL lets it vote (as TTRL's ``""`` does) and EMPO's TRL rule gives it
reward 0. Pass ``fallback="string"`` to key non-mathematical answers by their whitespace-
and case-normalised text instead (multiple-choice letters, words).

**Time limit.** In the main thread the parse and the normalisation run under
``math_verify``'s ``signal.alarm`` time-out (whole seconds, ``timeout_s``); a time-out gives
:data:`NONE_KEY`. ``signal`` works only in the main thread, so elsewhere the time-out is
off and we rely on the structural bounds (input length ``max_chars``, tree size, exponent
size) that make the normalisation itself cheap.

Keys are exact: ``1/3`` and ``0.3333`` are *different* keys even where a tolerant verifier
calls them equal. Counting needs a transitive relation; tolerance is not one.
"""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Hashable, Sequence
from typing import Literal

import numpy as np

NONE_KEY = "<none>"
"""The key of "no parsable answer" (one shared outcome; see the module docstring)."""

_MAX_NODES = 400  # evaluate only trees this small: evaluation cost is then tiny
_MAX_EXPONENT = 512  # and only powers whose exponents are this small (2^{2^{100}} is not)

_THOUSANDS = (
    re.compile(r"(?<=\d)\{,\}(?=\d{3})"),  # 1{,}234
    re.compile(r"(?<=\d)\\[,!; ](?=\d{3}(?!\d))"),  # 1\,234 (thin space)
)
_DELIMITED = re.compile(r"\$|\\\(|\\\[|\\boxed|\\fbox")


def _preprocess(text: str) -> str:
    for pat in _THOUSANDS:
        text = pat.sub("", text)
    if not _DELIMITED.search(text) and re.search(r"[\\^{}]", text):
        text = f"${text}$"
    return text


def _is_cheap(expr) -> bool:
    """True when rebuilding ``expr`` with evaluation is bounded: small tree, small powers."""
    import sympy

    try:
        for nodes, node in enumerate(sympy.preorder_traversal(expr), start=1):
            if nodes > _MAX_NODES:
                return False
            if isinstance(node, sympy.Pow):
                e = node.exp
                if not e.is_number or abs(float(e)) > _MAX_EXPONENT:
                    return False
                base = node.base
                # a huge base to a large integer power has a huge exact value
                if e.is_integer and base.is_number and abs(complex(base)) > 1e6 and abs(e) > 16:
                    return False
            elif isinstance(node, sympy.Function):
                # factorial(10**9), binomial(...): evaluation can be unbounded
                if any(a.is_number and abs(complex(a)) > 1000 for a in node.args):
                    return False
            elif isinstance(node, sympy.Integer) and abs(int(node)) > 10**300:
                return False
    except (TypeError, ValueError, OverflowError):
        return False
    return True


def _evaluate(expr):
    """Rebuilds ``expr`` bottom-up with SymPy's automatic evaluation (no ``doit``).

    This folds unevaluated arithmetic (``2/4 -> 1/2``, ``5 * UnevaluatedExpr(1/100) -> 1/20``)
    without running integrals, limits or sums, which ``doit`` would.
    """
    import sympy

    if not expr.args:
        return expr
    args = [_evaluate(a) for a in expr.args]
    if isinstance(expr, sympy.UnevaluatedExpr):
        return args[0]
    try:  # every node rebuilt: math_verify builds some with evaluate=False (2^{10}, 3!)
        return expr.func(*args)
    except Exception:  # noqa: BLE001 - a constructor that refuses keeps the parsed form
        return expr


def _normalise(expr) -> str:
    import sympy

    if isinstance(expr, sympy.Basic):
        # Exact rationals from the decimal text: 0.50 -> 1/2, 3.0 -> 3, -0.0 -> 0.
        floats = {f: sympy.Rational(str(f)) for f in expr.atoms(sympy.Float)}
        if floats:
            expr = expr.xreplace(floats)
        if _is_cheap(expr):
            try:
                expr = _evaluate(expr)
            except Exception:  # noqa: BLE001 - a failed evaluation keeps the parsed form
                pass
    key = str(expr)
    return "0" if key == "-0" else key


def _string_key(text: str) -> str:
    norm = " ".join(text.strip().lower().split())
    norm = re.sub(r"^\\text\{(.*)\}$", r"\1", norm)
    return f"str:{norm}" if norm else NONE_KEY


@functools.lru_cache(maxsize=1 << 14)  # <= 16k keys of <= max_chars: bounded memory
def _key_cached(text: str, timeout_s: int, fallback: str) -> str:
    import math_verify.parser as mv_parser
    from math_verify import parse
    from math_verify.errors import TimeoutException
    from math_verify.utils import timeout

    # We time the parse ourselves (one alarm around parse + normalisation; a nested alarm
    # inside parse would cancel ours), so math_verify's "timeout disabled" warning is moot.
    mv_parser.TIMEOUT_WARNING_SHOWN = True

    in_main = threading.current_thread() is threading.main_thread()
    limit = timeout_s if (in_main and timeout_s > 0) else None

    def work() -> str:
        parsed = parse(_preprocess(text), parsing_timeout=None, raise_on_error=False)
        for item in parsed:
            if not isinstance(item, str):
                return _normalise(item)
        return _string_key(text) if fallback == "string" else NONE_KEY

    try:
        return timeout(timeout_seconds=limit)(work)()
    except TimeoutException:
        return NONE_KEY
    except Exception:  # noqa: BLE001 - garbage in, "no answer" out; never raise on model text
        return NONE_KEY


def canonical_key(
    answer: str | None,
    *,
    timeout_s: int = 2,
    max_chars: int = 2048,
    fallback: Literal["none", "string"] = "none",
) -> str:
    """Canonical key of one answer (or of a whole response: the last ``\\boxed{}`` wins).

    Args:
      answer: the extracted final answer or the response text; ``None`` means no answer.
      timeout_s: whole seconds allowed for parsing + normalisation (main thread only; see the
        module docstring). A time-out returns :data:`NONE_KEY`.
      max_chars: longer inputs keep only their last ``max_chars`` characters (the final answer
        sits at the end); this bounds the regex work math_verify does.
      fallback: ``"none"`` (default) maps non-mathematical text to :data:`NONE_KEY`;
        ``"string"`` keys it as ``"str:<lower-cased, whitespace-collapsed text>"``.

    Returns:
      A string key; equal keys mean the same outcome.
    """
    if fallback not in ("none", "string"):
        raise ValueError(f"fallback={fallback!r}: use 'none' or 'string'")
    if answer is None:
        return NONE_KEY
    if not isinstance(answer, str):
        raise TypeError(
            f"answer must be a str or None, got {type(answer).__name__}; decode tokens first"
        )
    if not answer.strip():
        return NONE_KEY
    if len(answer) > max_chars:
        answer = answer[-max_chars:]
    return _key_cached(answer, int(timeout_s), fallback)


def canonical_keys(answers: Sequence[str | None], **kwargs) -> list[str]:
    """:func:`canonical_key` for each answer (keyword arguments passed through)."""
    return [canonical_key(a, **kwargs) for a in answers]


def keys_to_ids(keys: Sequence[Hashable]) -> np.ndarray:
    """Integer ids for hashable keys, numbered in order of first appearance.

    ``["12", "12", "7", "3", "7"] -> [0, 0, 1, 2, 1]``. Equal ids mean equal keys, so the
    result feeds the jit-able array functions (``batch_repetition_penalty``, EMPO, TTRL).

    Returns:
      ``int32[len(keys)]``.
    """
    table: dict[Hashable, int] = {}
    return np.asarray([table.setdefault(k, len(table)) for k in keys], dtype=np.int32)


# --------------------------------------------------------------------------- answer tokens

_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")


def last_boxed_span(text: str) -> tuple[int, int] | None:
    """Character span ``[start, end)`` strictly inside the last ``\\boxed{...}`` of ``text``.

    Braces are balanced (``\\boxed{\\frac{1}{2}}`` gives the span of ``\\frac{1}{2}``). ``None``
    when there is no complete box. This is the CRew answer region (the paper scores "the
    tokens that constitute the final answer"; the brace tokens are left out).
    """
    span = None
    for m in _BOXED.finditer(text):
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0:
            span = (m.end(), i - 1)
    return span


def answer_token_mask(
    pieces: Sequence[str], span: tuple[int, int] | None, length: int | None = None
) -> np.ndarray:
    """``bool[length]``: True on the tokens whose text overlaps the character ``span``.

    Args:
      pieces: the decoded text of each response token, in order (their concatenation is the
        response text the span refers to; e.g. ``[tok.decode([t]) for t in ids]``).
      span: ``[start, end)`` from :func:`last_boxed_span`, or ``None`` (all False).
      length: pad / cut the mask to this many tokens (the ``[B, T]`` layout).

    Used for ``answer_mask`` in CRew (:func:`~jaxrl_reason.rewards.labelfree.answer_confidence`)
    and to keep the exploration bonus off the answer tokens.
    """
    n = len(pieces) if length is None else length
    mask = np.zeros(n, bool)
    if span is None:
        return mask
    start = 0
    for t, piece in enumerate(pieces[:n]):
        end = start + len(piece)
        mask[t] = start < span[1] and end > span[0] and end > start
        start = end
    return mask
