"""Fixtures for the engine tests: a generated dataset tree (once per module) and a tiny method."""

from __future__ import annotations

import pytest

from tests.engine.fakes import make_tree


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """A generated DTD (6 classes, 8/2/4 images per class) in CoOp's layout."""
    return make_tree(tmp_path_factory.mktemp("data"))


@pytest.fixture
def classnames():
    return [f"class {c}" for c in "abcdef"]
