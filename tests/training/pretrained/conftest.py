"""The musicnn wheel for the pretrained-model tests: cached, fetched with pip, sha256-verified."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


#: Read at import: tests/conftest.py clears GENRETAG_* variables around each test.
CACHE = Path(os.environ.get("GENRETAG_MUSICNN_CACHE", Path.home() / ".cache" / "genretag"))


@pytest.fixture(scope="session")
def musicnn_wheel() -> Path:
    """``musicnn-0.1.0`` wheel from ``$GENRETAG_MUSICNN_CACHE`` (default ~/.cache/genretag)."""
    from genretag.training.pretrained.pull import PullError, fetch_wheel

    try:
        return fetch_wheel(CACHE)
    except PullError as exc:
        pytest.skip(f"musicnn wheel unavailable: {exc}")
