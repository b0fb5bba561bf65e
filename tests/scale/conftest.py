"""Fixtures for the scale tests: generated datasets and the environment of child processes."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a process a test starts: this checkout's code, one thread."""
    path = os.pathsep.join([str(SRC), *filter(None, [os.environ.get("PYTHONPATH")])])
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **extra}


PYTHON = sys.executable


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """A generated DTD (4 classes, 6/1/3 images per class, 32 px) in CoOp's layout."""
    from restore.data.fake import make_dataset_tree

    root = tmp_path_factory.mktemp("data")
    make_dataset_tree(root, "dtd", num_classes=4, per_class=(6, 1, 3), size=32, seed=0)
    return root


@pytest.fixture(autouse=True)
def _one_thread():
    from restore.engine.device import torch_threads

    with torch_threads(1):
        yield
