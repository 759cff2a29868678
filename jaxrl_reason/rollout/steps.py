"""Host-side step splitter: response text + token character offsets -> ``segment_id``.

Process and Monte Carlo credit methods need the tokens of a response grouped into steps.
This module runs on the host (plain Python / numpy, before the jitted credit call):

1. a *rule* cuts the response text into character spans that cover it
   (:func:`split_text`: ``"double_newline"``, ``"newline"``, ``"vineppo"``), or cuts the
   tokens directly (:func:`fixed_segment_ids`, :func:`spo_chain_segment_ids`);
2. :func:`token_segment_ids` maps tokens to spans through the tokenizer's character offsets
   (``offset_mapping`` of a fast tokenizer): a token belongs to the step that contains its
   first character (VinePPO ``_compute_token_advantages``); a token with an empty span
   (special tokens such as EOS, offsets ``(0, 0)`` or ``(n, n)``) joins the previous token's step;
3. :func:`pad_segment_ids` stacks rows into ``int32[B, T]`` with ``-1`` padding (ids outside
   ``0 .. S-1`` are ignored by every ``credit.segment_*`` helper).

:func:`segment_ids` dispatches on the rule name.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

__all__ = [
    "RESPONSE_RULES",
    "RULES",
    "response_segment_ids",
    "token_offsets",
    "pad_segment_ids",
    "segment_ids",
    "fixed_segment_ids",
    "split_text",
    "spo_chain_cut_points",
    "spo_chain_segment_ids",
    "token_segment_ids",
    "vineppo_split_points",
]

RULES = ("double_newline", "newline", "vineppo", "fixed", "spo_chain")
#: Rules :func:`response_segment_ids` accepts: the text rules, ``"task"`` (the task's own
#: ``split_steps``), ``"auto"`` (``"task"`` when the task has one, else ``"double_newline"``)
#: and ``"none"`` (the whole response is step 0).
RESPONSE_RULES = ("auto", "task", "none", "double_newline", "newline", "vineppo")

# VinePPO (McGill-NLP/VinePPO src/treetune/tasks/math_extract_steps_inplace.py): math spans
# that a sentence split must never cut, in the order the official code disguises them.
_MATH_PATTERNS = (
    r"\[asy\].*?\[/asy\]",
    r"\$\\begin\{tabular\}.*?\\end\{tabular\}\$",
    r"\\begin\{tabular\}.*?\\end\{tabular\}",
    r"\\\((.*?)\\\)",
    r"\\\[.*?\\\]",
    r"\$\$(.*?)\$\$",
    r"(?<!\\)\$(.*?[^\\])\$(?!\$)",
    r"\\begin\{([^}]*)\}.*?\\end\{\1\}",
)
# A period that ends a sentence: followed by whitespace and a capital, not after an initial
# or a one/two-letter abbreviation (the official regex, applied to the disguised text).
_PERIOD = re.compile(
    r"(?<!\b[A-Za-z]\.)(?<!\s[A-Za-z]\.)(?<!\s[A-Za-z][A-Za-z]\.)(?<=\.)(?=\s+[A-Z])"
)
# The official code replaces each math span by a 60-character placeholder before measuring
# part lengths; we keep the text length and add the difference back when measuring.
_PLACEHOLDER_LEN = 60
_MIN_PART_LEN = 20


def _protect_math(text: str) -> tuple[str, list[tuple[int, int]]]:
    """Masks math spans with NUL characters (same length) and returns them."""
    work = text
    spans: list[tuple[int, int]] = []
    for pat in _MATH_PATTERNS:
        for mt in re.finditer(pat, work, flags=re.DOTALL):
            if "\x00" in mt.group(0):  # overlaps an already protected span
                continue
            spans.append((mt.start(), mt.end()))
        for a, b in spans:
            work = work[:a] + "\x00" * (b - a) + work[b:]
    return work, sorted(set(spans))


def vineppo_split_points(text: str) -> list[int]:
    """Step boundaries of VinePPO's in-place splitter: ``[0, e_1, ..., len(text)]``.

    Math spans (``$..$``, ``$$..$$``, ``\\(..\\)``, ``\\[..\\]``, environments, tabular,
    asy) are protected; the text is split at newlines (the newline starts the next part) and
    after a sentence-final period followed by whitespace and a capital letter; a lone newline
    joins the next part; a part that does not end in ``.`` and is shorter than 20 characters
    (math spans counted as 60, the official placeholder length) is merged with the next one.

    Deviations from the official ``split_solution_inplace``: the later passes that split a
    trailing period out of math, split inside multi-line math, and break parts longer than
    100 characters at commas / ``=`` are not reproduced (they only refine long parts).
    """
    if not text:
        return [0, 0]
    work, spans = _protect_math(text)
    cuts = {m.start() for m in _PERIOD.finditer(work)}
    cuts |= {i for i, ch in enumerate(work) if ch == "\n"}
    cuts.discard(0)
    bounds = [0] + sorted(cuts) + [len(text)]
    parts = [(bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)]
    if text.startswith("\n"):
        parts.insert(0, (0, 0))  # str.split("\n") yields an empty first part here

    def eff_len(a: int, b: int) -> int:
        extra = sum(_PLACEHOLDER_LEN - (e - s) for s, e in spans if s >= a and e <= b)
        return b - a + extra

    i = 0
    while i < len(parts) - 1:
        a, b = parts[i]
        if text[a:b] == "\n":
            parts[i + 1] = (a, parts[i + 1][1])
            parts.pop(i)
        elif not work[a:b].endswith(".") and eff_len(a, b) < _MIN_PART_LEN:
            parts[i] = (a, parts.pop(i + 1)[1])
        else:
            i += 1
    return [parts[0][0]] + [b for _, b in parts]


def split_text(text: str, rule: str = "double_newline") -> list[tuple[int, int]]:
    """Cuts ``text`` into contiguous character spans ``[(start, end), ...]`` covering it.

    Rules:
      ``"double_newline"``: a step ends after each run of two or more newlines (PURE, PROF
        split on ``"\\n\\n"``; the separator closes its step).
      ``"newline"``: a step ends after each run of newlines (OREO step level).
      ``"vineppo"``: :func:`vineppo_split_points` (the newline opens the next step).

    An empty text gives one empty span ``[(0, 0)]``.
    """
    if rule in ("double_newline", "newline"):
        pat = r"\n\n+" if rule == "double_newline" else r"\n+"
        ends = [m.end() for m in re.finditer(pat, text) if m.end() < len(text)]
        bounds = [0] + ends + [len(text)]
    elif rule == "vineppo":
        bounds = vineppo_split_points(text)
    else:
        raise ValueError(
            f"split_text: unknown text rule {rule!r}; valid: 'double_newline', 'newline', "
            "'vineppo' (token rules 'fixed' / 'spo_chain' go through segment_ids)"
        )
    return [(bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)] or [(0, 0)]


def token_segment_ids(
    spans: Sequence[tuple[int, int]], offsets: Sequence[tuple[int, int]] | np.ndarray
) -> np.ndarray:
    """Maps tokens to steps: the step whose span contains the token's first character.

    Args:
      spans: contiguous character spans from :func:`split_text`.
      offsets: ``[T, 2]`` per-token ``(start, end)`` character offsets into the same text
        (``tokenizer(text, return_offsets_mapping=True)["offset_mapping"]``).

    Returns: int32 ``[T]``. Tokens with an empty span (special tokens) take the previous
    token's step (0 for a leading one); steps that no token starts in are skipped, so ids
    are renumbered to stay consecutive ``0 .. S-1``.
    """
    off = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
    starts = np.asarray([s for s, _ in spans], dtype=np.int64)
    out = np.zeros(len(off), dtype=np.int32)
    prev = 0
    for t, (a, b) in enumerate(off):
        if b > a:
            prev = int(np.searchsorted(starts, a, side="right") - 1)
            prev = max(prev, 0)
        out[t] = prev
    # consecutive numbering (a step with no token of its own disappears)
    if len(out):
        _, out = np.unique(out, return_inverse=True)
    return out.astype(np.int32)


def fixed_segment_ids(num_tokens: int, tokens_per_step: int) -> np.ndarray:
    """Steps of ``tokens_per_step`` consecutive tokens: ``segment_id[t] = t // n`` (int32[T])."""
    if tokens_per_step < 1:
        raise ValueError(f"tokens_per_step must be >= 1, got {tokens_per_step}")
    return (np.arange(num_tokens) // tokens_per_step).astype(np.int32)


def spo_chain_cut_points(
    token_probs: Sequence[float] | np.ndarray, *, rho: float = 0.9, interval: int = 5
) -> np.ndarray:
    """SPO-chain cut points: state indices ``c`` (prefix ``y_0..y_c``; ``-1`` = bare prompt).

    AIFrameResearch/SPO ``_create_value_estimation_requests``: candidates are tokens with
    ``p[t] < rho``; the state before each candidate is ``t - 1``; every ``interval``-th
    candidate (starting with the first) is kept: ``(cand - 1)[::interval]``.

    Args:
      token_probs: ``[T]`` actor probabilities of the sampled response tokens (valid part).
      rho: 0.9. interval: 5 (``int5`` configs).

    Returns: int64 ``[n]`` sorted cut indices.
    """
    p = np.asarray(token_probs, dtype=np.float64)
    cand = np.nonzero(p < rho)[0]
    return (cand - 1)[:: max(int(interval), 1)]


def spo_chain_segment_ids(
    token_probs: Sequence[float] | np.ndarray, *, rho: float = 0.9, interval: int = 5
) -> tuple[np.ndarray, np.ndarray, bool]:
    """Segments between SPO-chain cut points.

    Segment 0 holds tokens ``0 .. c_1``; segment k holds ``(c_k, c_{k+1}]``; the last
    ``(c_n, T-1]``. A cut at ``-1`` (the first token is a candidate) makes the prompt the state
    before segment 0. The MC value before segment ``k >= 1`` is ``V(c_k)``; before segment 0
    it is ``V(prompt)``, known only when ``-1`` is a cut point.

    Returns:
      ``(segment_id int32[T], cuts int64[n], first_value_known)``: ``cuts`` are the states
      whose values the sampler must estimate, in segment order (``cuts[0] == -1`` when the
      prompt is one); ``first_value_known`` tells whether segment 0 has a value
      (``step_value_mask[:, 0]`` for :func:`jaxrl_reason.credit.mc.spo_chain`).
      ``spo_chain``'s ``step_values[k]`` is then ``V(cuts[k])`` when ``first_value_known``,
      else ``V(cuts[k - 1])`` for ``k >= 1`` (anything for k = 0).
    """
    p = np.asarray(token_probs, dtype=np.float64)
    cuts = spo_chain_cut_points(p, rho=rho, interval=interval)
    inner = cuts[(cuts >= 0) & (cuts < len(p) - 1)]
    t = np.arange(len(p))
    seg = np.searchsorted(inner, t, side="left").astype(np.int32)
    return seg, cuts, bool(len(cuts) and cuts[0] == -1)


def segment_ids(
    text: str | None = None,
    offsets: Sequence[tuple[int, int]] | np.ndarray | None = None,
    *,
    rule: str = "double_newline",
    num_tokens: int | None = None,
    tokens_per_step: int = 64,
    token_probs: Sequence[float] | np.ndarray | None = None,
    rho: float = 0.9,
    interval: int = 5,
) -> np.ndarray:
    """``segment_id int32[T]`` of one response under ``rule`` (one of :data:`RULES`).

    Text rules (``double_newline``, ``newline``, ``vineppo``) need ``text`` and ``offsets``;
    ``fixed`` needs ``num_tokens`` (or ``offsets``) and ``tokens_per_step``; ``spo_chain``
    needs ``token_probs`` (``rho``, ``interval``).
    """
    if rule in ("double_newline", "newline", "vineppo"):
        if text is None or offsets is None:
            raise ValueError(f"segment_ids: rule {rule!r} needs both 'text' and 'offsets'")
        return token_segment_ids(split_text(text, rule), offsets)
    if rule == "fixed":
        n = num_tokens if num_tokens is not None else (None if offsets is None else len(offsets))
        if n is None:
            raise ValueError("segment_ids: rule 'fixed' needs 'num_tokens' or 'offsets'")
        return fixed_segment_ids(n, tokens_per_step)
    if rule == "spo_chain":
        if token_probs is None:
            raise ValueError("segment_ids: rule 'spo_chain' needs 'token_probs'")
        return spo_chain_segment_ids(token_probs, rho=rho, interval=interval)[0]
    raise ValueError(f"segment_ids: unknown rule {rule!r}; valid rules: {', '.join(RULES)}")


def pad_segment_ids(rows: Sequence[np.ndarray], length: int, *, pad: int = -1) -> np.ndarray:
    """Stacks per-row ids into ``int32[B, length]`` (right-padded with ``pad``; -1 = ignored).

    Raises ``ValueError`` naming the row when a row is longer than ``length``.
    """
    out = np.full((len(rows), length), pad, dtype=np.int32)
    for i, r in enumerate(rows):
        r = np.asarray(r, dtype=np.int32)
        if len(r) > length:
            raise ValueError(f"pad_segment_ids: row {i} has {len(r)} tokens > length {length}")
        out[i, : len(r)] = r
    return out


def token_offsets(tokenizer, ids: Sequence[int]) -> tuple[str, np.ndarray]:
    """``(text, offsets int64[L, 2])`` of a generated id sequence: token ``t`` covers
    ``text[offsets[t, 0]:offsets[t, 1]]`` of the decoded response.

    Sampled ids have no source text, so offsets come from decoding every prefix (one batched
    call): token ``t`` spans from the end of prefix ``t - 1`` to the end of prefix ``t``.
    Special tokens (dropped by the decode) and the bytes of a split multi-byte character get
    empty spans.
    """
    ids = [int(i) for i in ids]
    if not ids:
        return "", np.zeros((0, 2), np.int64)
    prefixes = tokenizer.batch_decode(
        [ids[: k + 1] for k in range(len(ids))], skip_special_tokens=True
    )
    text = prefixes[-1]
    ends = np.minimum([len(p) for p in prefixes], len(text))
    ends = np.maximum.accumulate(ends)
    starts = np.concatenate([[0], ends[:-1]])
    return text, np.stack([starts, ends], axis=1).astype(np.int64)


def response_segment_ids(
    tokenizer,
    tokens: np.ndarray,
    lengths: np.ndarray,
    *,
    rule: str = "auto",
    task=None,
    max_steps: int = 8,
) -> np.ndarray:
    """Per-token step ids of sampled responses: ``int32[B, R]``, -1 after each response.

    Args:
      tokenizer: the tokenizer that produced ``tokens``.
      tokens: int ``[B, R]`` response ids; ``lengths`` int ``[B]`` their lengths.
      rule: one of :data:`RESPONSE_RULES`. ``"task"`` uses ``task.split_steps(text)``
        (character spans, e.g. one per computed line of ``arith_chain``).
      task: the task (for ``"task"`` / ``"auto"``).
      max_steps: ``S``; ids are clipped to ``S - 1`` (later steps fold into the last).

    Returns:
      ``int32[B, R]``: step ``k`` of row ``b`` is the tokens with id ``k``; a token belongs to
      the step whose span holds its first character (:func:`token_segment_ids`).
    """
    if rule not in RESPONSE_RULES:
        raise ValueError(f"rollout.step_rule={rule!r}; valid rules: {', '.join(RESPONSE_RULES)}")
    has_task_rule = task is not None and hasattr(task, "split_steps")
    if rule == "auto":
        rule = "task" if has_task_rule else "double_newline"
    if rule == "task" and not has_task_rule:
        raise ValueError(
            f"rollout.step_rule='task' but task {getattr(task, 'name', task)!r} has no "
            "split_steps(); use 'double_newline', 'newline' or 'vineppo'"
        )
    tokens = np.asarray(tokens)
    out = np.full(tokens.shape, -1, np.int32)
    for b, n in enumerate(np.asarray(lengths)):
        n = int(n)
        if n == 0:
            continue
        if rule == "none":
            out[b, :n] = 0
            continue
        text, offsets = token_offsets(tokenizer, tokens[b, :n])
        spans = task.split_steps(text) if rule == "task" else split_text(text, rule)
        spans = _covering(spans, len(text))
        out[b, :n] = token_segment_ids(spans, offsets)
    return np.minimum(out, max_steps - 1).astype(np.int32)


def _covering(spans: Sequence[tuple[int, int]], n: int) -> list[tuple[int, int]]:
    """Contiguous spans covering ``[0, n)`` whose step ``k`` starts at ``spans[k]``'s start
    (text before the first span joins step 0; text between spans joins the earlier step)."""
    starts = sorted({int(a) for a, _ in spans if 0 <= int(a) < max(n, 1)})
    if not starts:
        return [(0, n)]
    starts[0] = 0
    bounds = starts + [n]
    return [(bounds[i], bounds[i + 1]) for i in range(len(starts))]
