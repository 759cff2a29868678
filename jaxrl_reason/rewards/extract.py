"""Final-answer extraction from model responses (pure string functions, host side).

Four extractors, tried in a fixed priority by :func:`extract_answer`:

1. ``#### <answer>``: the GSM8K convention (Cobbe et al., 2021, arXiv 2110.14168); the text
   after the *last* ``####`` up to the end of its line.
2. ``\\boxed{<answer>}``: the MATH convention (Hendrycks et al., 2021); the *last* box, with
   nested braces balanced (``\\boxed{\\frac{1}{2}}`` -> ``\\frac{1}{2}``). ``\\fbox`` too.
   A last box that never closes (``\\boxed{42`` -- e.g. a response cut off by the token
   limit) is a malformed final answer: it extracts *nothing*, neither an earlier box nor,
   under ``"auto"``, a looser reading of the same text (the ``42`` of ``\\boxed{42`` is not
   taken as the last number), so it never earns an outcome reward.
3. ``the answer is <answer>``: the natural-language convention of chain-of-thought prompting.
4. The last number in the text: the loosest fallback (Minerva-style "last number" grading).

Every extractor is linear in the input and bounded: responses are scanned once, brace matching
gives up after :data:`MAX_BRACE_DEPTH` levels, and nothing here calls a parser that can
recurse or evaluate. The heavy equivalence check lives in :mod:`jaxrl_reason.rewards.verify`.
"""

from __future__ import annotations

import re

__all__ = [
    "ANSWER_FORMATS",
    "MAX_BRACE_DEPTH",
    "extract_answer",
    "extract_answer_is",
    "extract_boxed",
    "extract_hash",
    "extract_last_number",
    "extraction_stats",
    "has_unclosed_box",
]

#: Formats a task may require. ``"auto"`` tries them all in priority order.
ANSWER_FORMATS = ("hash", "boxed", "answer_is", "last_number", "auto")

#: Deeper brace nesting than this is treated as garbage (no real answer nests 64 levels), so a
#: response with 10k nested braces costs one linear scan and extracts nothing.
MAX_BRACE_DEPTH = 64

_BRACE_RE = re.compile(r"\\[{}]|[{}]")
_HASH_RE = re.compile(r"####[ \t]*([^\n]*)")
_BOX_RE = re.compile(r"\\(?:boxed|fbox)\s*\{")
# "the answer is", "final answer:", "answer is:" ... up to the end of the sentence / line. The
# answer is bounded to 200 characters so that many matches on one long line stay linear.
_ANSWER_IS_RE = re.compile(
    r"(?:the\s+)?(?:final\s+)?answer\s*(?:is|:|=)\s*:?\s*([^\n]{1,200}?)(?:(?<!\d)\.(?!\d)|\n|$)",
    re.IGNORECASE,
)
# A number: optional sign, digits with optional thousands separators, optional decimals,
# or a bare decimal like .5, optionally followed by a simple fraction /d.
_NUMBER_RE = re.compile(r"[-\u2212]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?|[-\u2212]?\.\d+")


def _strip(ans: str) -> str:
    """Trims whitespace, surrounding ``$`` and a trailing full stop from an answer string."""
    ans = ans.strip()
    if len(ans) >= 2 and ans[0] == "$" and ans[-1] == "$":
        ans = ans.strip("$").strip()
    # A sentence-ending period is not part of the answer ("#### 18." -> "18"); a decimal
    # number never ends in ".", so stripping every trailing period is safe.
    while ans.endswith("."):
        ans = ans[:-1].rstrip()
    return ans


def extract_hash(text: str) -> str | None:
    """Returns the text after the last ``####`` (GSM8K format) on its line, or None.

    Args:
      text: a model response or a GSM8K gold solution.
    Returns:
      The stripped answer string, or None when there is no ``####`` or nothing follows it.
    """
    matches = _HASH_RE.findall(text)
    if not matches:
        return None
    ans = _strip(matches[-1])
    return ans or None


def extract_boxed(text: str, *, last: bool = True) -> str | None:
    """Returns the content of the last (or first) ``\\boxed{...}`` with nested braces balanced.

    Only that one box counts: when it never closes (unbalanced braces, e.g. ``\\boxed{42``
    at the end of a truncated response) the result is None, not an earlier closed box.

    Args:
      text: a response or a MATH solution.
      last: take the last box (the final answer by convention) rather than the first.
    Returns:
      The box content, or None when there is no box, it never closes, or its nesting exceeds
      :data:`MAX_BRACE_DEPTH` (adversarial input).
    """
    starts = [m.end() for m in _BOX_RE.finditer(text)]
    if not starts:
        return None
    start = starts[-1] if last else starts[0]
    depth = 1
    # The regex skips everything but braces in C; escaped \{ \} are content.
    for m in _BRACE_RE.finditer(text, start):
        tok = m.group()
        if tok == "{":
            depth += 1
            if depth > MAX_BRACE_DEPTH:
                return None
        elif tok == "}":
            depth -= 1
            if depth == 0:
                ans = text[start : m.start()].strip()
                return ans or None
    return None


def has_unclosed_box(text: str) -> bool:
    """Whether ``text`` has a ``\\boxed{`` / ``\\fbox{`` whose last box yields no answer.

    True for an unclosed (or too deeply nested, or empty) final box: the response committed
    to the boxed format and got it wrong, so :func:`extract_answer` does not fall back to
    the looser extractors.
    """
    return _BOX_RE.search(text) is not None and extract_boxed(text) is None


def extract_answer_is(text: str) -> str | None:
    """Returns what follows the last "the answer is" / "final answer:" phrase, or None."""
    matches = _ANSWER_IS_RE.findall(text)
    if not matches:
        return None
    ans = _strip(matches[-1])
    # "The answer is \boxed{5}" is handled by the boxed extractor; prefer its content here too.
    # An unclosed box ("The answer is \boxed{5") is a malformed answer: nothing.
    if _BOX_RE.search(ans):
        return extract_boxed(ans)
    return ans or None


def extract_last_number(text: str) -> str | None:
    """Returns the last number in ``text`` (keeps sign, thousands separators, decimals, a/b)."""
    last = None
    for last in _NUMBER_RE.finditer(text):  # noqa: B007 - we only need the final match
        pass
    return None if last is None else last.group(0)


_EXTRACTORS = {
    "hash": extract_hash,
    "boxed": extract_boxed,
    "answer_is": extract_answer_is,
    "last_number": extract_last_number,
}


def extract_answer(text: str, fmt: str = "auto") -> tuple[str | None, str | None]:
    """Extracts the final answer in the required format.

    Args:
      text: a model response.
      fmt: one of :data:`ANSWER_FORMATS`. A specific format only accepts that format (the
        strict reading a format reward needs); ``"auto"`` tries ``hash``, ``boxed``,
        ``answer_is`` and then ``last_number``, except that a response whose last box never
        closes (see :func:`has_unclosed_box`) stops after ``hash``: it gets no answer.
    Returns:
      ``(answer, method)``: the answer string and the name of the extractor that found it, or
      ``(None, None)`` when nothing was found.
    Raises:
      ValueError: for an unknown ``fmt``.
    """
    if fmt not in ANSWER_FORMATS:
        raise ValueError(f"fmt={fmt!r} is not an answer format; use one of {ANSWER_FORMATS}")
    if not isinstance(text, str):
        return None, None
    names = list(_EXTRACTORS) if fmt == "auto" else [fmt]
    for name in names:
        ans = _EXTRACTORS[name](text)
        if ans is not None:
            return ans, name
        if name == "boxed" and fmt == "auto" and _BOX_RE.search(text):
            return None, None  # a malformed (unclosed) final box: no looser fallback
    return None, None


def extraction_stats(responses, fmt: str = "auto") -> dict[str, float]:
    """Answer-extraction coverage of a set of responses (for evaluation reports).

    Args:
      responses: decoded responses.
      fmt: as in :func:`extract_answer`.
    Returns:
      ``{"coverage": fraction with an extracted answer, "method/<name>": fraction found by
      each extractor}`` (fractions of ``len(responses)``; empty input gives coverage 0).
    """
    n = len(responses)
    counts = dict.fromkeys(_EXTRACTORS, 0)
    found = 0
    for r in responses:
        ans, method = extract_answer(r, fmt)
        if ans is not None:
            found += 1
            counts[method] += 1
    out = {"coverage": found / n if n else 0.0}
    out.update({f"method/{k}": (v / n if n else 0.0) for k, v in counts.items()})
    return out
