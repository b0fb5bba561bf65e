"""Protocols built on generated trees: what each trains on and evaluates."""

from __future__ import annotations

import pytest

from restore.data import BaseToNovel, CrossDataset, DomainGeneralisation, FewShot, few_shot, get_protocol
from restore.data.builtin import DG_TARGETS, XD_TARGETS
from restore.data.fake import make_dataset_tree
from restore.data.load import load_dataset
from restore.data.protocols import base_to_novel
from restore.errors import ConfigError


@pytest.mark.parametrize(
    ("name", "cls"),
    [("b2n", BaseToNovel), ("base2novel", BaseToNovel), ("Base_To_Novel", BaseToNovel), ("xd", CrossDataset),
     ("cross-dataset", CrossDataset), ("dg", DomainGeneralisation), ("domain_generalization", DomainGeneralisation),
     ("fewshot", FewShot), ("few_shot", FewShot)],
)  # fmt: skip
def test_get_protocol_names(name, cls):
    assert type(get_protocol(name)) is cls


def test_unknown_protocol():
    with pytest.raises(ConfigError, match="unknown protocol 'zeroshot'") as e:
        get_protocol("zeroshot")
    assert "b2n" in e.value.hint


def test_base_to_novel_odd_class_count(tmp_path):
    make_dataset_tree(tmp_path, "dtd", num_classes=5, per_class=(3, 2, 2))
    base, novel = base_to_novel(load_dataset("dtd", tmp_path))
    assert (base.num_classes, novel.num_classes) == (3, 2)
    assert base.sizes() == (9, 6, 6) and novel.sizes() == (6, 4, 4)


def test_b2n_samples_few_shot_over_all_classes_before_splitting(tmp_path):
    make_dataset_tree(tmp_path, "caltech101", num_classes=6, per_class=(5, 4, 2))
    data = get_protocol("b2n").build("Caltech101", tmp_path, shots=2, seed=3, cache_dir=tmp_path / "c")
    # Independent: CoOp's order is few-shot on all classes, then the base half.
    fs = few_shot(load_dataset("caltech101", tmp_path), 2, 3, cache_dir=tmp_path / "c2")
    base_paths = [d.path for d in fs.train if d.label < 3]
    assert [d.path for d in data.train.train] == base_paths
    assert set(data.evaluate) == {"base", "novel"}
    assert data.evaluate["base"].sizes() == (6, 6, 6) and data.evaluate["novel"].sizes() == (6, 6, 6)
    assert {d.label for d in data.evaluate["novel"].test} == {0, 1, 2}
    assert data.evaluate["novel"].classnames == fs.classnames[3:]


def test_fewshot_protocol(tmp_path):
    make_dataset_tree(tmp_path, "eurosat", num_classes=4, per_class=(6, 4, 3))
    data = FewShot().build("eurosat", tmp_path, shots=4, seed=1, cache_dir=tmp_path / "c")
    assert data.train.sizes() == (16, 16, 12)
    assert list(data.evaluate) == ["all"] and data.evaluate["all"].test == data.train.test
    assert FewShot().eval_labels() == ["all"]


def test_cross_dataset_and_domain_generalisation(tmp_path):
    make_dataset_tree(tmp_path, "imagenet", num_classes=3, per_class=(4, 0, 2))
    for name in (*XD_TARGETS, *DG_TARGETS):
        make_dataset_tree(tmp_path, name, num_classes=3, per_class=(2, 1, 2))
    xd = get_protocol("xd").build(None, tmp_path, shots=2, seed=1, classes="present", cache_dir=tmp_path / "c")
    assert xd.train.name == "imagenet" and len(xd.train.train) == 6
    assert list(xd.evaluate) == ["imagenet", *XD_TARGETS] == CrossDataset().eval_labels()
    assert len(XD_TARGETS) == 10 and all(xd.evaluate[t].sizes()[2] == 6 for t in XD_TARGETS)
    dg = get_protocol("dg").build("imagenet", tmp_path, shots=1, seed=1, classes="present", cache_dir=tmp_path / "c")
    assert list(dg.evaluate) == ["imagenet", "imagenet_v2", "imagenet_sketch", "imagenet_a", "imagenet_r"]
    # ImageNet-A/R are labelled within their 200 classes and map back onto ImageNet's 1000.
    a = dg.evaluate["imagenet_a"]
    assert a.parent_labels is not None and len(a.parent_labels) == a.num_classes == 3
    assert all(0 <= p < 1000 for p in a.parent_labels)


def test_transfer_with_custom_targets_and_test_only_source(tmp_path):
    make_dataset_tree(tmp_path, "dtd", num_classes=2, per_class=(2, 1, 1))
    make_dataset_tree(tmp_path, "eurosat", num_classes=2, per_class=(2, 1, 1))
    data = CrossDataset(source="dtd", targets=["eurosat"]).build(None, tmp_path, shots=1, cache_dir=tmp_path / "c")
    assert list(data.evaluate) == ["dtd", "eurosat"]
    with pytest.raises(ConfigError, match="test-only"):
        FewShot().build("imagenet_r", tmp_path)
    with pytest.raises(ConfigError, match="needs a dataset name"):
        BaseToNovel().build(None, tmp_path)
