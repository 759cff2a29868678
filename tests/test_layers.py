"""The layering is a checked contract: import-linter passes on the tree and fails on an upward
import planted in a copy of it."""

import os
import shutil
import subprocess
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
LINT = os.path.join(os.path.dirname(sys.executable), "lint-imports")


def _lint(cwd):
    return subprocess.run([LINT], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_layers_are_kept():
    out = _lint(ROOT)
    assert out.returncode == 0, out.stdout[-3000:]
    assert "jaxrl_reason layers KEPT" in out.stdout


def test_an_upward_import_breaks_the_contract(tmp_path):
    for name in ("jaxrl_reason", "experiments", "benchmarks"):
        shutil.copytree(
            os.path.join(ROOT, name), tmp_path / name, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(os.path.join(ROOT, "pyproject.toml"), tmp_path)
    with open(tmp_path / "jaxrl_reason" / "credit" / "outcome.py", "a") as f:
        f.write("\nfrom jaxrl_reason.train import step as _upward  # noqa\n")
    out = _lint(tmp_path)
    assert out.returncode != 0
    assert "jaxrl_reason.credit is not allowed to import jaxrl_reason.train" in out.stdout
