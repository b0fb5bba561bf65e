"""The real split files and DTD images in ../shared/data: published sizes, base/novel counts, present mode."""

from __future__ import annotations

import pytest
import torch

from restore.data import base_to_novel, eval_transform, load_dataset, train_transform, verify_dataset
from restore.data.images import open_image
from restore.errors import DataError
from tests.data.conftest import SHARED_SPLITS, split_only
from tests.helpers import shared_data

DTD_PRESENT = ["banded", "blotchy", "braided", "bubbly", "bumpy", "chequered", "cobwebbed", "cracked",
               "crosshatched", "crystalline"]  # fmt: skip


@pytest.mark.parametrize("name", sorted(SHARED_SPLITS))
def test_split_files_have_published_sizes_and_base_novel_counts(name):
    _, sizes, n_base, n_novel = SHARED_SPLITS[name]
    splits = split_only(name)
    assert splits.sizes() == sizes
    base, novel = base_to_novel(splits)
    assert (base.num_classes, novel.num_classes) == (n_base, n_novel)
    # Every image lands in exactly one half, relabelled from 0, with its class name kept.
    for part in ("train", "val", "test"):
        assert len(getattr(base, part)) + len(getattr(novel, part)) == len(getattr(splits, part))
    assert {d.label for d in novel.test} == set(range(n_novel))
    assert novel.classnames == splits.classnames[n_base:]
    assert all(novel.classnames[d.label] == d.classname for d in novel.test)


def test_dtd_present_mode_loads_the_10_classes_on_disk(shared_root):
    splits = load_dataset("DescribableTextures", shared_root, classes="present")
    assert splits.sizes() == (600, 240, 360)
    assert splits.classnames == DTD_PRESENT
    assert {d.label for d in splits.train} == set(range(10))
    assert any("dropped 37" in n and "dotted" in n for n in splits.notes)
    assert any("splits/split_zhou_DescribableTextures.json" in n for n in splits.notes)
    base, novel = base_to_novel(splits)
    assert (base.num_classes, novel.num_classes) == (5, 5)


def test_dtd_without_present_names_the_missing_classes(shared_root):
    with pytest.raises(DataError) as e:
        load_dataset("dtd", shared_root)
    msg = e.value.message
    assert "4440 of 5640 listed images are missing" in msg
    assert "37 of 47 classes have no images: dotted, fibrous" in msg
    assert "classes='present'" in e.value.hint and "restore data verify dtd" in e.value.hint


def test_the_other_shared_split_files_load_by_path(shared_root, tmp_path):
    # Their images are not shared: loading them with an explicit split file names the folder it looked in.
    with pytest.raises(DataError, match=r"OxfordPets: folder .*oxford_pets does not exist"):
        load_dataset("oxford_pets", tmp_path, split_file=shared_data("splits", "split_zhou_OxfordPets.json"))


def test_real_dtd_images_decode_and_transform(shared_root):
    report = verify_dataset("dtd", shared_root, classes="present", workers=2)
    assert report.ok and report.listed == 1200
    assert report.good_counts["train"] == [60] * 10 and report.good_counts["test"] == [36] * 10
    splits = load_dataset("dtd", shared_root, classes="present")
    one_per_class = {d.label: d for d in splits.test}.values()
    ev, tr = eval_transform(), train_transform()
    for d in one_per_class:
        image = open_image(d.path)
        for t in (ev, tr):
            x = t(image)
            assert x.shape == (3, 224, 224) and x.dtype == torch.float32
            assert torch.isfinite(x).all() and -2.0 < x.min() < x.max() < 2.7
