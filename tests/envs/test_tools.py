"""Calculator (safe arithmetic via ast) and the Tool wrapper."""

from __future__ import annotations

import pytest

from jaxrl_reason.envs.tools import CalculatorError, Tool, calculator, safe_eval


@pytest.mark.parametrize(
    "expr,want",
    [
        ("3*(4+5)", "27"),
        ("2**10", "1024"),
        ("-7 // 2", "-4"),
        ("17 % 5", "2"),
        ("10 / 4", "2.5"),
        ("12 / 4", "3"),
        ("-(3 - 10)", "7"),
        ("1,234 + 1", "1235"),
        ("2^3", "8"),
        ("0.1 + 0.2", "0.3"),
        ("2 ** -1", "0.5"),
        ("4821 * 37 - 912 * 16", str(4821 * 37 - 912 * 16)),
    ],
)
def test_calculator_values(expr, want):
    assert calculator(expr) == want


@pytest.mark.parametrize(
    "expr",
    [
        "9**9**9",
        "2**100000",
        "10**1000 * 10**1000 * 10**1000 * 10**1000 * 10**1000",
        "__import__('os').system('true')",
        "open('/etc/passwd')",
        "x + 1",
        "(1).__class__",
        "[1, 2]",
        "'a' * 10",
        "1/0",
        "5 % 0",
        "10.0 ** 400",
        "(-8) ** 0.5",
        "lambda: 1",
        "1 << 100000",
        "",
        "(" * 5000 + "1" + ")" * 5000,
        "1 +",
        "True + 1",
    ],
)
def test_calculator_hostile(expr):
    out = calculator(expr)
    assert out.startswith("error:"), out
    with pytest.raises(CalculatorError):
        safe_eval(expr)


def test_tool_catches_exceptions():
    def boom(_):
        raise RuntimeError("kaput")

    out = Tool("boom", boom)("x")
    assert out.error and out.text == "error: RuntimeError: kaput"
    ok = Tool("echo", lambda s: s)("hi")
    assert not ok.error and ok.text == "hi"
