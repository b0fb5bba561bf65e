"""Fixtures for the reliability tests: a generated dataset per test (they break it on purpose), one thread."""

from __future__ import annotations

import pytest

from tests.reliability.helpers import make_tree


@pytest.fixture
def data_root(tmp_path):
    """A fresh generated DTD (6 classes, 8/2/4 images per class) that the test may damage."""
    return make_tree(tmp_path / "data")


@pytest.fixture(scope="module")
def shared_root(tmp_path_factory):
    """A generated DTD shared by a module's tests that only read it."""
    return make_tree(tmp_path_factory.mktemp("data"))
