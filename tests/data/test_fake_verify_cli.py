"""Generated trees for every registry entry through its reader, `verify`, and the `restore data` commands."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from restore.data import list_datasets, load_dataset, verify_dataset
from restore.data.dataset_commands import app
from restore.data.fake import make_dataset_tree
from restore.data.registry import get_dataset
from restore.errors import DataError

runner = CliRunner()
BUILTIN = list_datasets()[:15]


@pytest.mark.parametrize("name", BUILTIN)
def test_every_registry_entry_reads_its_generated_tree(tmp_path, name):
    fake = make_dataset_tree(tmp_path, name, num_classes=3, per_class=(2, 1, 2))
    spec = get_dataset(name)
    splits = load_dataset(name, tmp_path, classes="present" if fake.partial else "all")
    assert splits.sizes() == fake.sizes
    assert splits.classnames == fake.classnames and splits.num_classes == 3
    assert all(d.path.is_file() and d.path.is_relative_to(tmp_path / spec.folder) for d in splits.test)
    assert all(splits.classnames[d.label] == d.classname for d in (*splits.train, *splits.test))
    if fake.partial:
        # Only 3 of the dataset's fixed classes exist: loading all of them names the missing class folders.
        with pytest.raises(DataError, match="classes have no images"):
            load_dataset(name, tmp_path)
    report = verify_dataset(name, tmp_path, classes="present", workers=2)
    assert report.ok and report.listed == sum(fake.sizes) - (fake.sizes[1] if name == "imagenet" else 0)


def test_imagenet_labels_follow_the_fixed_wnid_list(tmp_path):
    make_dataset_tree(tmp_path, "imagenet", num_classes=3, per_class=(1, 0, 1), classnames_txt=True)
    # Remove the middle class: labels of the others must not shift (CoOp's folder enumeration would shift them).
    import shutil

    for split in ("train", "val"):
        shutil.rmtree(tmp_path / "imagenet" / "images" / split / "n01443537")
    full = load_dataset("imagenet", tmp_path, classes="present")
    assert full.classnames == ["tench", "great white shark"]
    assert any("classnames.txt" in n for n in full.notes)
    assert any("dropped 998" in n for n in full.notes)


def test_classnames_txt_overrides_open_clip_names(tmp_path):
    make_dataset_tree(tmp_path, "imagenet_r", num_classes=2, per_class=(0, 0, 1))
    lines = tmp_path / "imagenet-rendition" / "classnames.txt"
    from restore.data.readers import imagenet_wnids

    lines.write_text("".join(f"{w} thing {i}\n" for i, w in enumerate(imagenet_wnids()["imagenet"])))
    splits = load_dataset("imagenet_r", tmp_path, classes="present")
    assert splits.classnames == ["thing 1", "thing 2"]
    assert splits.parent_labels == [1, 2]


def test_verify_reports_corrupt_and_missing_files(tmp_path):
    fake = make_dataset_tree(tmp_path, "oxford_pets", num_classes=4, per_class=(3, 1, 2), corrupt=1, missing=1)
    report = verify_dataset("oxford_pets", tmp_path, workers=2)
    assert not report.ok
    assert report.missing == fake.missing and [p for p, _ in report.corrupt] == fake.corrupt
    assert report.listed == 24 and sum(map(sum, report.good_counts.values())) == 22
    with pytest.raises(DataError, match="1 images are missing") as e:
        load_dataset("oxford_pets", tmp_path)
    assert str(fake.missing[0]) in e.value.message
    # present mode drops only absent classes, never single files
    with pytest.raises(DataError, match="drops only classes with no images"):
        load_dataset("oxford_pets", tmp_path, classes="present")


def test_cli_verify_exit_codes_and_output(tmp_path):
    fake = make_dataset_tree(tmp_path, "fgvc_aircraft", num_classes=3, per_class=(2, 2, 2), corrupt=1, missing=1)
    result = runner.invoke(app, ["verify", "FGVCAircraft", "--root", str(tmp_path), "--workers", "2"])
    assert result.exit_code == 1, result.output
    assert "2 problem files (1 missing, 1 corrupt)" in result.output
    assert f"missing: {fake.missing[0]}" in result.output and str(fake.corrupt[0]) in result.output
    assert fake.classnames[0] in result.output  # the per-class table

    make_dataset_tree(tmp_path / "ok", "dtd", num_classes=2, per_class=(2, 1, 1))
    result = runner.invoke(app, ["verify", "dtd", "--root", str(tmp_path / "ok")])
    assert result.exit_code == 0 and "8 exist and decode: OK" in result.output


def test_cli_verify_on_the_shared_dtd(shared_root):
    result = runner.invoke(app, ["verify", "dtd", "--root", str(shared_root), "--classes", "present", "--no-decode"])
    assert result.exit_code == 0, result.output
    assert "1200 images listed" in result.output and "dropped 37 classes" in result.output
    result = runner.invoke(app, ["verify", "dtd", "--root", str(shared_root), "--no-decode", "--show", "2"])
    assert result.exit_code == 1 and "4440 problem files (4440 missing" in result.output
    assert "... 4438 more" in result.output


def test_cli_errors_are_restore_errors(tmp_path):
    result = runner.invoke(app, ["verify", "dtd", "--root", str(tmp_path / "nowhere")])
    assert isinstance(result.exception, DataError) and "does not exist" in result.exception.message
    result = runner.invoke(app, ["info", "dtd", "--root", str(tmp_path), "--classes", "some"])
    assert "--classes must be" in str(result.exception)


def test_cli_list_info_fewshot(tmp_path):
    result = runner.invoke(app, ["list", "--root", str(tmp_path)])
    assert result.exit_code == 0
    for name in BUILTIN:
        assert name in result.output
    assert "automatic" in result.output and "manual step" in result.output

    make_dataset_tree(tmp_path, "dtd", num_classes=5, per_class=(4, 2, 1))
    result = runner.invoke(app, ["info", "dtd", "--root", str(tmp_path)])
    assert result.exit_code == 0 and "5 classes, train/val/test (20, 10, 5)" in result.output
    assert "3 base classes (12, 6, 3), 2 novel classes (8, 4, 2)" in result.output

    out = tmp_path / "fs.json"
    result = runner.invoke(app, ["fewshot", "dtd", "--root", str(tmp_path), "--shots", "2", "--seed", "2", "--out",
                                 str(out)])  # fmt: skip
    assert result.exit_code == 0 and "train 10, val 10, test 5" in result.output
    written = json.loads(out.read_text())
    assert len(written["train"]) == 10 and written["train"][0][0].startswith(written["train"][0][2].replace(" ", "_"))


def test_the_sub_app_mounts_under_a_root_app(tmp_path):
    import typer

    root_app = typer.Typer()

    @root_app.callback()
    def _root() -> None: ...

    root_app.add_typer(app, name="data")  # how restore.cli mounts it
    make_dataset_tree(tmp_path, "eurosat", num_classes=2, per_class=(1, 1, 1))
    result = runner.invoke(root_app, ["data", "verify", "EuroSAT", "--root", str(tmp_path)])
    assert result.exit_code == 0 and "eurosat: 6 images listed, 6 exist and decode: OK" in result.output


def test_data_commands_read_restore_data_when_no_root_is_given(tmp_path, monkeypatch):
    make_dataset_tree(tmp_path, "dtd", num_classes=5, per_class=(4, 2, 1))
    monkeypatch.setenv("RESTORE_DATA", str(tmp_path))
    info = runner.invoke(app, ["info", "dtd"])
    assert info.exit_code == 0 and "5 classes, train/val/test (20, 10, 5)" in info.output
    verify = runner.invoke(app, ["verify", "dtd", "--no-decode"])
    assert verify.exit_code == 0, verify.output
    monkeypatch.delenv("RESTORE_DATA")
    from restore.cli import app as restore_app

    missing = runner.invoke(restore_app, ["data", "info", "dtd"])
    assert missing.exit_code == 2 and "error: no data root given for dtd" in missing.output
    assert "pass --root DIR" in missing.output and "Traceback" not in missing.output


def test_a_dataset_with_its_own_home_needs_no_root(tmp_path, monkeypatch):
    """An image folder given by its path, and a generated world task, are found without --root."""
    from PIL import Image

    monkeypatch.delenv("RESTORE_DATA", raising=False)
    monkeypatch.setenv("RESTORE_CACHE", str(tmp_path / "cache"))
    for name in ("red_fox", "blue_jay"):
        (tmp_path / "mine" / name).mkdir(parents=True)
        for i in range(10):
            Image.new("RGB", (8, 8), (20 * i, 0, 0)).save(tmp_path / "mine" / name / f"{i}.png")
    folder = runner.invoke(app, ["info", str(tmp_path / "mine")])
    assert folder.exit_code == 0 and "2 classes, train/val/test (10, 4, 6)" in folder.output, folder.output
    world = runner.invoke(app, ["verify", "world_tinted_colours", "--no-decode"])
    assert world.exit_code == 0 and (tmp_path / "cache" / "world" / "tinted_colours").is_dir(), world.output
