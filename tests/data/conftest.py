"""Locates the shared offline datasets (``../shared/data`` from the main checkout)."""

import os

import pytest


def _shared_data_dir(name: str) -> str | None:
    here = os.path.dirname(os.path.abspath(__file__))
    repo = os.path.dirname(os.path.dirname(here))
    for cand in (
        os.environ.get("JAXRL_SHARED_DATA"),
        os.path.join(repo, "..", "shared", "data"),
        "/work/shared/data",
    ):
        if cand and os.path.isdir(os.path.join(cand, name)):
            return os.path.abspath(os.path.join(cand, name))
    return None


@pytest.fixture(scope="session")
def gsm8k_dir():
    d = _shared_data_dir("gsm8k")
    if d is None:
        pytest.skip("GSM8K JSONL not found (set JAXRL_SHARED_DATA to the folder holding gsm8k/)")
    return d


@pytest.fixture(scope="session")
def math_dir():
    d = _shared_data_dir("math")
    if d is None:
        pytest.skip("MATH data not found (set JAXRL_SHARED_DATA to the folder holding math/)")
    return d
