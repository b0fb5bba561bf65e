"""Fixtures for the data tests: the shared real split files and DTD images, and generated dataset trees."""

from __future__ import annotations

from pathlib import Path

import pytest

from restore.data.readers import read_split_file_dataset
from restore.data.registry import get_dataset
from restore.data.types import DatasetSplits
from tests.helpers import shared_data

# name -> (split file in ../shared/data/splits, published train/val/test sizes, base classes, novel classes)
SHARED_SPLITS = {
    "dtd": ("split_zhou_DescribableTextures.json", (2820, 1128, 1692), 24, 23),
    "eurosat": ("split_zhou_EuroSAT.json", (13500, 5400, 8100), 5, 5),
    "oxford_pets": ("split_zhou_OxfordPets.json", (2944, 736, 3669), 19, 18),
    "caltech101": ("split_zhou_Caltech101.json", (4128, 1649, 2465), 50, 50),
}


@pytest.fixture
def shared_root() -> Path:
    return shared_data()


def split_only(name: str) -> DatasetSplits:
    """A shared split file read without its images (few-shot and base/novel need only the lists)."""
    path = shared_data("splits", SHARED_SPLITS[name][0])
    spec = get_dataset(name)
    return read_split_file_dataset(spec, Path("/nonexistent-root") / spec.folder, path)
