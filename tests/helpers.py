"""Helpers tests import: ``from tests.helpers import shared_data``."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def shared_data(*parts: str) -> Path:
    """A path under ../shared/data, or a skip with the reason when it is absent."""
    path = SHARED_DATA.joinpath(*parts).resolve()
    if not path.exists():
        pytest.skip(f"shared test data not found at {path} (it lives beside the repository, not in it)")
    return path
