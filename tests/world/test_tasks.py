"""World tasks: CoOp-format folders and split files, generated once, identical to the in-memory render."""

from __future__ import annotations

import dataclasses
import json
import math
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from restore.errors import ConfigError
from restore.world import lexicon as L
from restore.world.shifts import Shift
from restore.world.tasks import PROBES, REGIME, TASKS, ensure_task, get_task, task_images


def test_there_are_at_least_three_tasks_with_plain_text_class_names():
    assert len(TASKS) >= 3
    for task in TASKS.values():
        names = task.classnames
        assert len(set(names)) == len(names) == len(task.classes)
        assert all(n.replace(" ", "").isalpha() for n in names), names
    assert "red circle" in TASKS["color_shape"].classnames
    assert "striped triangle" in TASKS["pattern_shape"].classnames


@pytest.mark.parametrize("name", ["color_shape", "pattern_shape"])
def test_novel_classes_recombine_attributes_seen_in_base(name):
    task = TASKS[name]
    n = len(task.classes)
    base, novel = task.classes[: math.ceil(n / 2)], task.classes[math.ceil(n / 2) :]
    for pos in range(len(task.attributes)):
        assert {c[pos] for c in base} == {c[pos] for c in novel}
    assert not set(base) & set(novel)


def test_ensure_task_writes_the_coop_layout(tmp_path):
    task = get_task("shapes")
    root = ensure_task("shapes", root=tmp_path)
    assert root == tmp_path / "shapes"
    split = json.loads((root / "split_world_Shapes.json").read_text())
    assert set(split) == {"train", "val", "test"}
    for name, per_class in zip(("train", "val", "test"), task.counts, strict=True):
        rows = split[name]
        assert Counter(label for _, label, _ in rows) == {label: per_class for label in range(len(task.classes))}
        for rel, label, classname in rows:
            assert classname == task.classnames[label]
            assert rel.startswith(classname.replace(" ", "_") + "/")
    assert len(L.SHAPES) * 50 == len(split["test"])
    images, labels = task_images("shapes", "test")
    for k in (0, 17, 599):
        rel, label, _ = split["test"][k]
        assert label == labels[k]
        assert np.array_equal(np.asarray(Image.open(root / "images" / rel).convert("RGB")), images[k])


def test_ensure_task_generates_once_and_repairs_stale_copies(tmp_path, monkeypatch):
    root = ensure_task("pattern_shape", root=tmp_path)
    split_file = root / "split_world_PatternShape.json"
    stamp = split_file.stat().st_mtime_ns
    assert ensure_task("pattern_shape", root=tmp_path) == root
    assert split_file.stat().st_mtime_ns == stamp  # cached: not rewritten
    (root / "world_task.json").write_text(json.dumps({"task": "pattern_shape", "format_version": -1}))
    ensure_task("pattern_shape", root=tmp_path)
    assert json.loads((root / "world_task.json").read_text())["format_version"] != -1
    assert [p.name for p in tmp_path.iterdir()] == ["pattern_shape"]  # no temporary folders left


def test_default_root_is_under_restore_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RESTORE_CACHE", str(tmp_path))
    assert ensure_task("color_shape") == tmp_path / "world" / "color_shape"


def test_task_images_are_deterministic_and_hold_their_class():
    a, la = task_images("color_shape", "train", limit_per_class=2)
    b, lb = task_images("color_shape", "train", limit_per_class=2)
    assert np.array_equal(a, b) and np.array_equal(la, lb)
    task = TASKS["color_shape"]
    for label, _, scene in task.scenes("val"):
        o = scene.objects[0]
        assert (o.colour, o.shape) == task.classes[label]


def test_unknown_task_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown world task"):
        get_task("nope")


@pytest.mark.parametrize("name", ["tinted_colours", "tinted_colour_shape", "tinted_colour_pattern"])
def test_a_tinted_task_is_its_untinted_scenes_seen_through_its_camera(name):
    """Same scenes and labels as the task without its shift; only the pixels move, by exactly the shift."""
    task = get_task(name)
    assert not task.shift.is_identity and task.shift.hue != 0
    plain = dataclasses.replace(task, shift=Shift())
    entries = [e for e in task.scenes("train") if e[1] < 2]
    assert [(lab, k) for lab, k, _ in entries] == [(lab, k) for lab, k, _ in plain.scenes("train") if k < 2]
    raw = plain.render(entries, "train")
    tinted = task.render(entries, "train")
    keys = task.image_keys([(lab, k) for lab, k, _ in entries], "train")
    assert np.array_equal(tinted, task.shift.apply(raw, keys))
    images, labels = task_images(name, "train", limit_per_class=2)
    assert np.array_equal(images, tinted) and labels.tolist() == [lab for lab, _, _ in entries]
    # the camera turns colours, not brightness: mean luminance stays within a few levels
    lum = np.array([0.299, 0.587, 0.114])
    assert abs(float((tinted @ lum).mean() - (raw @ lum).mean())) < 4
    assert np.abs(tinted.astype(int) - raw.astype(int)).mean() > 3  # ...and the colours did move


@pytest.mark.parametrize("name", ["tinted_colours", "tinted_colour_shape", "tinted_colour_pattern"])
def test_tinted_tasks_hold_disjoint_colours_in_their_halves(name):
    """A novel class is a colour never named in training; each half holds warm, cool and grey colours."""
    task = get_task(name)
    n_base = math.ceil(len(task.classes) / 2)
    pos = task.attributes.index("colour")
    base = {L.COLOURS[c[pos]].name for c in task.classes[:n_base]}
    novel = {L.COLOURS[c[pos]].name for c in task.classes[n_base:]}
    assert not base & novel and len(base) == len(novel) == 6
    for half in (base, novel):
        assert half & {"red", "orange", "yellow", "pink", "brown"}
        assert half & {"green", "blue", "cyan", "purple"}
        assert half & {"gray", "white", "black"}


def test_the_regime_and_the_probes_name_real_tasks():
    assert set(PROBES) <= set(TASKS) and set(REGIME) <= set(TASKS)
    assert len(REGIME) >= 4
    assert sum(not TASKS[n].shift.is_identity for n in REGIME) >= 3


def test_a_tinted_task_on_disk_is_its_in_memory_render(tmp_path):
    root = ensure_task("tinted_colours", root=tmp_path)
    manifest = json.loads((root / "world_task.json").read_text())
    assert manifest["shift"] == get_task("tinted_colours").shift.to_dict()  # another camera: another cache
    split = json.loads((root / "split_world_TintedColours.json").read_text())
    images, labels = task_images("tinted_colours", "test")
    for k in (0, 51, len(split["test"]) - 1):
        rel, label, _ = split["test"][k]
        assert label == labels[k]
        assert np.array_equal(np.asarray(Image.open(root / "images" / rel).convert("RGB")), images[k])
