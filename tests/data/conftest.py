"""Fixtures for the shared offline datasets (see ``tests/shared_data.py``)."""

import pytest

from tests.shared_data import require


@pytest.fixture(scope="session")
def gsm8k_dir():
    return require("gsm8k")


@pytest.fixture(scope="session")
def math_dir():
    return require("math")
