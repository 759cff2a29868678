"""Locates the shared offline datasets: ``../shared/data`` beside the checkout (CI's layout),
``$JAXRL_SHARED_DATA``, or this workplace's ``/work/shared/data``; tests skip without them."""

import os

import pytest

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def shared_data_dir(name: str) -> str | None:
    """Absolute path of ``<shared>/data/<name>`` or None when no candidate holds it."""
    for cand in (
        os.environ.get("JAXRL_SHARED_DATA"),
        os.path.join(_REPO, "..", "shared", "data"),
        "/work/shared/data",
    ):
        if cand and os.path.isdir(os.path.join(cand, name)):
            return os.path.abspath(os.path.join(cand, name))
    return None


def require(name: str) -> str:
    """:func:`shared_data_dir` or skip the calling test with the fix in the message."""
    d = shared_data_dir(name)
    if d is None:
        pytest.skip(f"{name} data not found (set JAXRL_SHARED_DATA to the folder holding {name}/)")
    return d
