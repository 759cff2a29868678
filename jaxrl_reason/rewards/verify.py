"""Answer equivalence with a time limit: a numeric fast path, then math-verify in a worker.

A reward function runs on every sampled response, and the policy will sooner or later emit
garbage: 10k nested braces, a 50k-digit number, ``9**9**9**9``. Such output must score 0 and
must never crash or hang the run. Three layers keep it that way:

1. **Pre-filters** (:func:`is_pathological`, linear scans): overlong answers, digit runs longer
   than :data:`MAX_DIGITS`, brace nesting deeper than :data:`MAX_BRACE_DEPTH`, power towers,
   huge exponents and factorials score 0 without being parsed.
2. **Fast path** (:func:`parse_number`): when the gold answer and the extracted prediction are
   both plain numbers (thousands separators, decimals, ``a/b``, ``\\frac{a}{b}``, a sign,
   currency, ``%``, unit words around them) they are compared exactly as ``Fraction`` s. This
   settles GSM8K and generated arithmetic without touching sympy.
3. **math-verify** (Hugging Face, ``math_verify.parse`` / ``math_verify.verify``) for
   everything else (LaTeX expressions, intervals, sets), run in a *persistent worker process*
   (:class:`MathVerifyWorker`). math-verify's own timeout uses ``signal.alarm``, which only
   works on the main thread and cannot interrupt a long C-level big-integer operation; the
   worker is its main thread, and the parent kills and restarts it when an item exceeds the
   per-item time limit. The worker is started with ``subprocess`` (not ``multiprocessing``) so
   it never forks a process that holds JAX's threads and never re-imports the caller's
   ``__main__``.

Scores are 1.0 (equivalent) or 0.0, float32 in :func:`verify_batch`.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import select
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from fractions import Fraction

import numpy as np

from jaxrl_reason.rewards.extract import MAX_BRACE_DEPTH, extract_answer

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "MAX_ANSWER_CHARS",
    "MAX_DIGITS",
    "MathVerifyWorker",
    "is_pathological",
    "math_verify_equal",
    "parse_number",
    "verify",
    "verify_answer",
    "verify_batch",
]

#: Per-item wall-clock limit for the math-verify path, in seconds.
DEFAULT_TIMEOUT_S = 3.0
#: An extracted answer longer than this is not an answer (MATH's longest gold is ~100 chars).
MAX_ANSWER_CHARS = 400
#: A digit run longer than this is garbage; it also keeps clear of Python's 4300-digit
#: int-to-str limit, which raises ValueError.
MAX_DIGITS = 100

_DIGIT_RUN_RE = re.compile(rf"\d{{{MAX_DIGITS + 1},}}")
# A numeric power tower: 9^9^9, 9^{9^9}, 9**9**9, 9**(9**9). The exponent is a number
# followed by another power before any closing bracket, so (x^2)^3 and e^{x^2} pass.
_TOWER_RE = re.compile(r"(\^|\*\*)\s*[\{\(]?\s*\d+(\.\d+)?\s*(\^|\*\*)")
# An exponent of five or more digits, or the factorial of a 5+ digit number (MATH has
# \frac{1}{2004!}, so 4-digit factorials are legitimate answers).
_HUGE_EXP_RE = re.compile(r"(\^|\*\*)\s*[\{\(]?\s*-?\d{5,}|\d{5,}\s*!")


def is_pathological(s: str) -> bool:
    """True when ``s`` must not be handed to a symbolic parser (cheap linear checks).

    Catches answers longer than :data:`MAX_ANSWER_CHARS`, digit runs longer than
    :data:`MAX_DIGITS`, brace nesting deeper than :data:`MAX_BRACE_DEPTH`, power towers
    (``9^9^9``, ``9**9**9**9``), exponents with five or more digits and factorials of 5+ digit
    numbers.
    """
    if len(s) > MAX_ANSWER_CHARS or _DIGIT_RUN_RE.search(s):
        return True
    depth = 0
    for c in s:
        if c in "{(":
            depth += 1
            if depth > MAX_BRACE_DEPTH:
                return True
        elif c in "})":
            depth = max(depth - 1, 0)
    return bool(_TOWER_RE.search(s) or _HUGE_EXP_RE.search(s))


# --------------------------------------------------------------------------------------------
# Fast path: plain numbers.

_NUM = r"[+-]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|[+-]?\.\d+"
_PLAIN_RE = re.compile(rf"^(?P<num>{_NUM})$")
_SLASH_RE = re.compile(r"^(?P<sign>[+-]?)(?P<a>\d+)/(?P<b>\d+)$")
# \frac{a}{b}, \dfrac34 (without braces each argument is a single digit, as in LaTeX).
_FRAC_RE = re.compile(
    r"^(?P<sign>[+-]?)\\[dt]?frac(?:\{(?P<a>[+-]?\d+)\}|(?P<a1>\d))(?:\{(?P<b>[+-]?\d+)\}|(?P<b1>\d))$"
)
_TEXT_RE = re.compile(r"\\(?:text|textbf|mathrm|mbox)\{([^{}]*)\}")
# Unit words around a number ("18 dollars", "about 5 km/h", "12 eggs per day"). Each token is
# atomic (a whole run of 2+ letters, or a fixed symbol), so a failing match backtracks
# linearly, not exponentially. Math words (pi, sqrt, ...) are not units: "2 pi" is not 2.
_WORD = r"(?:(?!(?:pi|sqrt|log|ln|sin|cos|tan|exp|i)(?![A-Za-z]))[A-Za-z]{2,}(?![A-Za-z]))"
_UNIT = rf"(?:{_WORD}\.?|/[A-Za-z]+(?![A-Za-z])|\^[23])"
_WITH_UNITS_RE = re.compile(rf"^(?:{_WORD}\s+)*(?P<num>{_NUM})\s+{_UNIT}(?:\s*{_UNIT})*$")
_DEGREE_RE = re.compile(rf"^(?P<num>{_NUM})\s*(?:\^\{{?\\circ\}}?|°)$")


def _normalize(s: str) -> str:
    s = s.strip().replace("\u2212", "-")  # Unicode minus sign, as some tokenizers emit it
    s = _TEXT_RE.sub(r" \1 ", s)
    for tok in ("\\$", "$", "€", "£", "¥", "\\!", "\\,", "\\;", "\\ ", "\\left", "\\right"):
        s = s.replace(tok, " " if tok in ("\\ ", "\\,", "\\;") else "")
    s = s.strip().rstrip(".").strip()
    for pct in ("\\%", "%"):
        if s.endswith(pct):
            s = s[: -len(pct)].strip()
    # "x = 5" / "n=5": the value is the right-hand side.
    if "=" in s:
        s = s.rsplit("=", 1)[1].strip()
    return s


def parse_number(s: str | None) -> Fraction | None:
    """Parses a plain numeric answer exactly, or returns None when it is not one.

    Accepted: ``-1,234.50``, ``.5``, ``3/4``, ``\\frac{3}{4}``, ``\\dfrac34``, ``-\\frac{1}{2}``,
    ``$18``, ``\\$18.00``, ``50%``, ``18 dollars``, ``\\text{18 eggs}``, ``x = 5``, ``90^\\circ``.
    A percent sign is dropped (``50%`` == 50: GSM8K writes percentages as bare numbers).

    Args:
      s: an extracted answer string.
    Returns:
      The value as a ``fractions.Fraction`` (exact, so 0.1 + 0.2 questions compare exactly).
    """
    if s is None or len(s) > MAX_ANSWER_CHARS or _DIGIT_RUN_RE.search(s):
        return None
    s = _normalize(s)
    for pat in (_PLAIN_RE, _WITH_UNITS_RE, _DEGREE_RE):
        m = pat.match(s)
        if m:
            return Fraction(m.group("num").replace(",", ""))
    m = _SLASH_RE.match(s) or _FRAC_RE.match(s)
    if m:
        gd = m.groupdict()
        a = int(gd["a"] if gd["a"] is not None else gd["a1"])
        b = int(gd["b"] if gd["b"] is not None else gd["b1"])
        if b == 0:
            return None
        val = Fraction(a, b)
        return -val if m.group("sign") == "-" else val
    return None


def _light_norm(s: str) -> str:
    return (
        re.sub(r"\s+|\$|\\[,;! ]", "", s).replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    )


# --------------------------------------------------------------------------------------------
# Slow path: math-verify, in-process or in a killable worker process.


def _alarm_s(timeout_s: float) -> int:
    # One item is three alarmed calls (parse gold, parse prediction, verify) and
    # signal.alarm takes whole seconds: a third of the item's limit each, at least 1 s.
    return max(1, int(timeout_s // 3))


def _mv_parse(s: str, timeout_s: float):
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    # Answers arrive without delimiters; wrap them so the LaTeX extractor sees math mode.
    text = s if "$" in s or "\\boxed" in s else f"${s}$"
    return parse(
        text,
        extraction_config=[LatexExtractionConfig(), ExprExtractionConfig()],
        parsing_timeout=_alarm_s(timeout_s),
    )


def math_verify_equal(pred: str, gold: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> float:
    """math-verify equivalence of two answer strings, in *this* process (1.0 or 0.0).

    Uses math-verify's own ``signal.alarm`` timeouts, which only fire on the main thread and
    cannot stop a C-level big-int computation: use :class:`MathVerifyWorker` (what
    :func:`verify_batch` does) for untrusted model output. Exceptions score 0.
    """
    from math_verify import verify as mv_verify

    try:
        g = _mv_parse(gold, timeout_s)
        p = _mv_parse(pred, timeout_s)
        if not g or not p:
            return 0.0
        return 1.0 if mv_verify(g, p, timeout_seconds=_alarm_s(timeout_s)) else 0.0
    except Exception:  # noqa: BLE001 - any failure of the parser is a wrong answer, not a crash
        return 0.0


def _worker_main() -> None:
    """Worker loop: JSON lines ``{"i", "p", "g", "t"}`` on stdin -> ``{"i", "s"}`` on stdout."""
    import logging

    logging.disable(logging.CRITICAL)  # math-verify logs every timeout; the parent counts them
    # Import and warm up sympy's LaTeX parsing before signalling readiness, so the first real
    # item is not charged the ~1 s of lazy imports.
    math_verify_equal("x^2+1", "1+x^2", 3.0)

    out = sys.stdout
    out.write('{"ready": true}\n')
    out.flush()
    for line in sys.stdin:
        req = json.loads(line)
        score = math_verify_equal(req["p"], req["g"], req["t"])
        out.write(json.dumps({"i": req["i"], "s": score}) + "\n")
        out.flush()


class MathVerifyWorker:
    """A persistent math-verify process with a hard per-item wall-clock limit.

    One item at a time goes down a pipe; if its answer does not come back within
    ``timeout_s`` the process is killed (SIGKILL: it may be stuck in C code) and restarted on
    the next item, and the item scores 0. Thread-safe (one lock around the pipe).

    Args:
      timeout_s: hard per-item wall-clock limit in seconds. Inside the worker, math-verify's
        own alarms get a third of it each (at least 1 s), so most slow items end cleanly
        without a restart; the kill is the backstop for what an alarm cannot interrupt.
      start_timeout_s: limit for starting the process and importing math-verify.
    """

    def __init__(self, timeout_s: float = DEFAULT_TIMEOUT_S, start_timeout_s: float = 60.0):
        if timeout_s <= 0:
            raise ValueError(f"timeout_s={timeout_s} must be > 0 (seconds per item)")
        self.timeout_s = float(timeout_s)
        self.start_timeout_s = float(start_timeout_s)
        self.num_timeouts = 0
        self.num_restarts = 0
        self._proc: subprocess.Popen | None = None
        self._buf = b""
        self._lock = threading.Lock()

    # The program the worker runs (tests substitute one that hangs to exercise the kill).
    _WORKER_CODE = "from jaxrl_reason.rewards.verify import _worker_main; _worker_main()"
    # The repo root, so the worker imports this same checkout (there may be no install).
    _ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

    def _start(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([self._ROOT, env.get("PYTHONPATH", "")]).rstrip(
            os.pathsep
        )
        self._proc = subprocess.Popen(
            [sys.executable, "-c", self._WORKER_CODE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            bufsize=0,
        )
        self._buf = b""
        if self._readline(self.start_timeout_s) is None:
            self._kill()
            raise RuntimeError(
                "math-verify worker did not start within "
                f"{self.start_timeout_s:.0f}s; check that `math_verify` imports in {sys.executable}"
            )
        self.num_restarts += 1

    def _readline(self, timeout: float) -> dict | None:
        """Next JSON line from the worker, or None on timeout / worker death."""
        assert self._proc is not None and self._proc.stdout is not None
        deadline = time.monotonic() + timeout
        fd = self._proc.stdout.fileno()
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:  # EOF: the worker died
                return None
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return json.loads(line)

    def _kill(self) -> None:
        if self._proc is not None:
            try:
                self._proc.kill()
                self._proc.wait(timeout=5)
            except Exception:  # noqa: BLE001 - already gone
                pass
        self._proc = None

    def equal(self, pred: str, gold: str) -> float:
        """1.0 if math-verify finds ``pred`` equivalent to ``gold`` within the limit, else 0."""
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self._start()
            assert self._proc is not None and self._proc.stdin is not None
            req = {"i": 0, "p": pred, "g": gold, "t": self.timeout_s}
            try:
                self._proc.stdin.write((json.dumps(req) + "\n").encode())
            except (BrokenPipeError, OSError):
                self._kill()
                return 0.0
            resp = self._readline(self.timeout_s)
            if resp is None:
                self.num_timeouts += 1
                self._kill()
                return 0.0
            return float(resp["s"])

    def close(self) -> None:
        """Stops the worker process (it restarts on the next call)."""
        with self._lock:
            self._kill()


_DEFAULT_WORKERS: dict[tuple[float, int], MathVerifyWorker] = {}
_DEFAULT_LOCK = threading.Lock()


def _default_worker(timeout_s: float, index: int = 0) -> MathVerifyWorker:
    """The shared worker ``index`` for this time limit (started on first use)."""
    with _DEFAULT_LOCK:
        key = (float(timeout_s), index)
        if key not in _DEFAULT_WORKERS:
            _DEFAULT_WORKERS[key] = MathVerifyWorker(timeout_s)
        return _DEFAULT_WORKERS[key]


@atexit.register
def _close_default_workers() -> None:
    for w in _DEFAULT_WORKERS.values():
        w.close()


# --------------------------------------------------------------------------------------------
# Public API.


def _fast_verdict(pred: str | None, gold: str) -> float | None:
    """1.0 / 0.0 when the cheap checks decide, None when math-verify must."""
    if pred is None or not isinstance(pred, str) or is_pathological(pred):
        return 0.0
    g_num = parse_number(gold)
    if g_num is not None:
        p_num = parse_number(pred)
        if p_num is not None:
            return 1.0 if p_num == g_num else 0.0
        if not re.search(r"\d", pred):
            return 0.0  # a rational gold cannot equal an answer with no digit in it
    if _light_norm(pred) == _light_norm(gold):
        return 1.0
    if is_pathological(gold):
        return 0.0
    return None


def _slow_verdict(
    pred: str, gold: str, timeout_s: float, worker: MathVerifyWorker | None | str
) -> float:
    if worker is None:
        return math_verify_equal(pred, gold, timeout_s)
    w = _default_worker(timeout_s) if isinstance(worker, str) else worker
    return w.equal(pred, gold)


def verify_answer(
    pred: str | None,
    gold: str,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    worker: MathVerifyWorker | None | str = "default",
    slow_path: bool = True,
) -> float:
    """Equivalence of an *extracted* answer with the gold answer (1.0 or 0.0).

    Pre-filters, then the exact numeric fast path, then math-verify.

    Args:
      pred: the extracted predicted answer (None scores 0).
      gold: the gold answer string (e.g. GSM8K's ``1,234``, MATH's ``\\frac{\\sqrt3}{2}``).
      timeout_s: per-item limit for the math-verify path.
      worker: ``"default"`` (a shared :class:`MathVerifyWorker` per timeout), a worker, or
        None to call math-verify in this process (trusted input only: no hard limit).
      slow_path: False scores 0 whatever would need math-verify (a spent time budget).
    """
    fast = _fast_verdict(pred, gold)
    if fast is not None:
        return fast
    if not slow_path:
        return 0.0
    assert pred is not None
    return _slow_verdict(pred, gold, timeout_s, worker)


def verify(
    response: str,
    gold: str,
    *,
    fmt: str = "auto",
    timeout_s: float = DEFAULT_TIMEOUT_S,
    worker: MathVerifyWorker | None | str = "default",
    slow_path: bool = True,
) -> float:
    """Outcome reward of one response: extract its final answer and compare with ``gold``.

    Args:
      response: the decoded model response.
      gold: the gold answer string.
      fmt: the answer format to extract (see ``extract.ANSWER_FORMATS``).
      timeout_s, worker, slow_path: as in :func:`verify_answer`.
    Returns:
      1.0 when the extracted answer is equivalent to ``gold``, else 0.0 (also for garbage).
    """
    pred, _ = extract_answer(response, fmt)
    return verify_answer(pred, gold, timeout_s=timeout_s, worker=worker, slow_path=slow_path)


def verify_batch(
    responses: Sequence[str],
    answers: Sequence[str],
    *,
    fmt: str = "auto",
    timeout_s: float = DEFAULT_TIMEOUT_S,
    max_batch_s: float | None = None,
    num_workers: int = 1,
    worker: MathVerifyWorker | None | str = "default",
) -> np.ndarray:
    """Outcome rewards of a batch: ``float32[B]`` of 1.0 / 0.0.

    All items go through extraction, the pre-filters and the numeric fast path first; only the
    rest is sent to math-verify, spread over ``num_workers`` worker processes.

    Args:
      responses: ``B`` decoded responses.
      answers: ``B`` gold answers (repeat each gold ``n`` times for ``n`` samples per prompt).
      fmt: the answer format to extract.
      timeout_s: per-item limit on the math-verify path.
      max_batch_s: optional budget for the batch's math-verify calls; items that have not
        started when it is spent score 0. This bounds a step's reward time even when every
        response is adversarial.
      num_workers: parallel math-verify processes (with ``worker="default"``).
      worker: as in :func:`verify_answer`; an explicit worker or None ignores ``num_workers``.
    Raises:
      ValueError: when the two sequences differ in length, or ``num_workers < 1``.
    """
    if len(responses) != len(answers):
        raise ValueError(
            f"verify_batch got {len(responses)} responses and {len(answers)} answers; "
            "repeat each gold answer once per sample"
        )
    if num_workers < 1:
        raise ValueError(f"verify_batch: num_workers={num_workers} must be >= 1")
    out = np.zeros(len(responses), dtype=np.float32)
    slow: list[tuple[int, str, str]] = []
    for i, (r, a) in enumerate(zip(responses, answers, strict=True)):
        pred, _ = extract_answer(r, fmt)
        fast = _fast_verdict(pred, a)
        if fast is None:
            assert pred is not None
            slow.append((i, pred, a))
        else:
            out[i] = fast
    if not slow:
        return out
    start = time.monotonic()

    def run(items: list[tuple[int, str, str]], w: MathVerifyWorker | None | str) -> None:
        for i, pred, gold in items:
            if max_batch_s is not None and time.monotonic() - start >= max_batch_s:
                return
            out[i] = _slow_verdict(pred, gold, timeout_s, w)

    if not isinstance(worker, str) or num_workers == 1 or len(slow) == 1:
        run(slow, worker)
        return out
    k = min(num_workers, len(slow))
    workers = [_default_worker(timeout_s, j) for j in range(k)]
    # Interleaved shards: neighbouring items (often the same prompt) spread over workers.
    threads = [
        threading.Thread(target=run, args=(slow[j::k], workers[j]), daemon=True) for j in range(k)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out
