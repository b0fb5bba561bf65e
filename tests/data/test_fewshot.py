"""Few-shot sampling against an independent re-implementation of the CoOp/Dassl procedure, and its cache."""

from __future__ import annotations

import json
import random
from collections import defaultdict

import pytest

from restore.data import few_shot
from restore.data.fake import make_dataset_tree
from restore.data.load import load_dataset
from restore.errors import ConfigError, DataError
from tests.data.conftest import SHARED_SPLITS, split_only


def coop_reference(split_json: dict, shots: int, seed: int) -> tuple[list, list]:
    """What CoOp does, written from its description: global `random` seeded once, then Dassl's
    generate_fewshot_dataset on train (shots) and val (min(shots, 4)), on the split file's raw rows."""
    random.seed(seed)

    def generate(rows, k):
        tracker = defaultdict(list)
        for row in rows:
            tracker[row[1]].append(row)
        out = []
        for items in tracker.values():
            out.extend(random.sample(items, k) if len(items) >= k else items)
        return out

    train = generate(split_json["train"], shots)
    val = generate(split_json["val"], min(shots, 4))
    return train, val


def rows(splits, items):
    return [[d.path.relative_to(splits.image_root).as_posix(), d.label, d.classname] for d in items]


@pytest.mark.parametrize("name", sorted(SHARED_SPLITS))
def test_matches_coop_for_seeds_1_to_3_and_all_shot_counts(name, tmp_path):
    from tests.helpers import shared_data

    raw = json.loads(shared_data("splits", SHARED_SPLITS[name][0]).read_text())
    splits = split_only(name)
    for seed in (1, 2, 3):
        for shots in (1, 2, 4, 8, 16):
            fs = few_shot(splits, shots, seed, cache_dir=tmp_path)
            ref_train, ref_val = coop_reference(raw, shots, seed)
            assert rows(fs, fs.train) == ref_train, (name, seed, shots)
            assert rows(fs, fs.val) == ref_val, (name, seed, shots)
            assert fs.test == splits.test
            assert len(fs.train) == shots * splits.num_classes


def test_module_random_state_is_untouched(tmp_path):
    random.seed(123)
    before = random.getstate()
    few_shot(split_only("dtd"), 4, 1, cache_dir=tmp_path, cache=False)
    assert random.getstate() == before


def test_cache_round_trips_and_is_used(tmp_path, monkeypatch):
    splits = split_only("eurosat")
    first = few_shot(splits, 8, 2, cache_dir=tmp_path)
    files = list((tmp_path / "eurosat").glob("shot_8-seed_2-*.json"))
    assert len(files) == 1
    cached = json.loads(files[0].read_text())
    assert cached["shots"] == 8 and cached["seed"] == 2 and len(cached["train"]) == 80
    assert cached["train"][0] == rows(first, first.train[:1])[0]

    # A second call must come from the file: sampling is made impossible.
    def no_sampling(*a, **k):
        raise AssertionError("resampled instead of reading the cache")

    monkeypatch.setattr("restore.data.fewshot.sample_per_label", no_sampling)
    again = few_shot(splits, 8, 2, cache_dir=tmp_path)
    assert again.train == first.train and again.val == first.val
    # Mapped back onto the split's own Datum objects, not copies.
    assert all(a is b for a, b in zip(again.train, first.train, strict=True))


def test_default_cache_dir_is_under_restore_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RESTORE_CACHE", str(tmp_path / "rc"))
    few_shot(split_only("dtd"), 1, 1)
    assert list((tmp_path / "rc" / "splits" / "dtd").glob("shot_1-seed_1-*.json"))


def test_a_damaged_or_stale_cache_is_ignored(tmp_path):
    splits = split_only("dtd")
    good = few_shot(splits, 2, 1, cache_dir=tmp_path)
    (path,) = (tmp_path / "dtd").glob("*.json")
    path.write_text("{not json")
    assert few_shot(splits, 2, 1, cache_dir=tmp_path).train == good.train
    # A changed split (here: a subset of classes) has another fingerprint, hence another file.
    few_shot(splits.subset_labels(range(10)), 2, 1, cache_dir=tmp_path)
    assert len(list((tmp_path / "dtd").glob("*.json"))) == 2


def test_different_seeds_give_different_sets(tmp_path):
    splits = split_only("oxford_pets")
    sets = [{d.path for d in few_shot(splits, 16, s, cache_dir=tmp_path).train} for s in (1, 2, 3)]
    assert sets[0] != sets[1] and sets[1] != sets[2] and sets[0] != sets[2]


def test_all_shots_and_bad_values(tmp_path):
    splits = split_only("dtd")
    assert few_shot(splits, -1, 1, cache_dir=tmp_path) is splits
    assert few_shot(splits, 0, 1, cache_dir=tmp_path) is splits
    with pytest.raises(ConfigError):
        few_shot(splits, -5, 1)


def test_short_classes_take_all_with_a_note_or_fail_when_strict(tmp_path):
    fake = make_dataset_tree(tmp_path / "d", "eurosat", num_classes=3, per_class=(5, 2, 1))
    splits = load_dataset("eurosat", fake.root)
    fs = few_shot(splits, 8, 1, cache_dir=tmp_path)
    assert len(fs.train) == 15 and len(fs.val) == 6
    assert any("3 classes have fewer than 8 training images (all taken)" in n for n in fs.notes)
    with pytest.raises(DataError, match="3 classes have fewer than 8 training images"):
        few_shot(splits, 8, 1, cache_dir=tmp_path, strict=True)
    repeated = few_shot(splits, 8, 1, cache_dir=tmp_path, repeat_short=True)
    # Dassl's repeat=True: random.choices per short class, from the same seeded generator.
    rng = random.Random(1)
    expected = [d for y in range(3) for d in rng.choices([d for d in splits.train if d.label == y], k=8)]
    assert repeated.train == expected and len(expected) == 24


def test_imagenet_val_is_not_subsampled(tmp_path):
    fake = make_dataset_tree(tmp_path / "d", "imagenet", num_classes=3, per_class=(5, 0, 3))
    splits = load_dataset("imagenet", fake.root, classes="present")
    fs = few_shot(splits, 2, 1, cache_dir=tmp_path)
    assert len(fs.train) == 6 and fs.val == splits.val == splits.test and len(fs.val) == 9
