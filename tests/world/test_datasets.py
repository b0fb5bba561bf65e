"""The world's tasks are datasets of the registry: generated on first use, read by the same loaders and
protocols as the 15 benchmark datasets, at $RESTORE_CACHE/world when a run names no data root."""

from __future__ import annotations

import json

import pytest

from restore.data import get_dataset, list_datasets, load_dataset
from restore.data.protocols import base_to_novel
from restore.engine.plan import plan_run
from restore.world import lexicon as L
from restore.world.datasets import dataset_name
from restore.world.tasks import TASKS


def test_every_task_is_a_registered_dataset_marked_synthetic():
    for task in TASKS:
        spec = get_dataset(dataset_name(task))
        assert spec.name in list_datasets() and "SYNTHETIC" in spec.description
        assert get_dataset(f"world/{task}") is spec


def test_loading_generates_the_task_in_the_root_and_reads_its_split_file(tmp_path):
    splits = load_dataset("world_shapes", tmp_path)
    split_file = json.loads((tmp_path / "shapes" / "split_world_Shapes.json").read_text())
    sizes = [len(splits.train), len(splits.val), len(splits.test)]
    assert sizes == [len(split_file[k]) for k in ("train", "val", "test")]
    assert sizes == [12 * n for n in TASKS["shapes"].counts]
    assert splits.classnames == TASKS["shapes"].classnames
    assert all(item.path.is_file() for item in splits.test[:20])


def test_base_to_novel_on_a_combination_task_sees_every_attribute_in_both_halves(tmp_path):
    splits = load_dataset("world_color_shape", tmp_path)
    base, novel = base_to_novel(splits)
    for half in (base, novel):
        words = [name.split() for name in half.classnames]
        colours = {w[0] for w in words}
        shapes = {w[1] for w in words}
        assert len(colours) == 6 and len(shapes) == 6
    assert not set(base.classnames) & set(novel.classnames)
    assert len(base.classnames) == len(novel.classnames) == 18
    assert {w.split()[0] for w in base.classnames} <= {c.name for c in L.COLOURS}


@pytest.mark.integration
def test_a_run_without_data_root_generates_the_task_under_restore_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RESTORE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("RESTORE_DATA", raising=False)
    config = {"method": "zeroshot", "protocol": "b2n", "data": {"dataset": "world_shapes", "workers": 0}}
    plan = plan_run({**config, "model": {"backbone": "world"}, "out": str(tmp_path / "runs")})
    assert plan.config.data.root == tmp_path / "cache" / "world"
    assert (tmp_path / "cache" / "world" / "shapes" / "split_world_Shapes.json").is_file()
    assert len(plan.data.train.train) == 6 * 16  # base half of 12 shapes, 16 shots
