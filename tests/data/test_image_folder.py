"""Your own images from the command line (issue 17 §2): ``-d /path/to/folder`` with a seeded split recorded in
the run, a CoOp-format split file (``--split-file`` / ``data.split_file``) for any dataset, and one clear
message for each way such data can be wrong."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from restore.cli import app
from restore.data import load_dataset
from restore.data.folder import FolderSplit, configured_spec
from restore.engine.run_config import build_run_config
from tests.engine.fakes import make_tree
from tests.test_plugins import write_images

RUNNER = CliRunner()
ENV = {"COLUMNS": "250", "OMP_NUM_THREADS": "1"}
TINY = ["--backbone", "random:tiny", "--workers", "0", "--quiet", "--db", "none", "--set", "data.eval_batch_size=16"]
CLASSES = {"red_fox": 10, "grey_wolf": 10, "cat": 7, "owl": 12}


def invoke(*args):
    return RUNNER.invoke(app, [str(a) for a in args], env=ENV)


def errors(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error:")]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_images(tmp_path_factory.mktemp("own") / "animals", CLASSES)


def _rows(split: dict, part: str) -> set[tuple[str, int, str]]:
    return {tuple(r) for r in split[part]}


def test_a_folder_run_records_its_seeded_split_and_eval_and_a_rerun_use_exactly_it(folder, tmp_path):
    out = tmp_path / "runs"
    args = ["run", "b2n", "-m", "coop", "-d", folder, "--epochs", "1", "--shots", "2", "--out", out, *TINY]
    result = invoke(*args, "--set", "data.split_seed=7")
    assert result.exit_code == 0, result.output
    (run,) = (out / "b2n" / "animals" / "coop").iterdir()
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["data"]["dataset"] == str(folder) and config["data"]["split_seed"] == 7
    split = json.loads((run / "split.json").read_text())

    # Per class (sorted folder names, _ read as a space): test 30 %, val 20 % (at least one each), the rest
    # trains; the three parts are disjoint and hold every image.
    names = sorted(CLASSES)
    for label, name in enumerate(names):
        n = CLASSES[name]
        parts = {p: {r[0] for r in split[p] if r[1] == label} for p in ("train", "val", "test")}
        n_test, n_val = max(1, round(0.3 * n)), max(1, round(0.2 * n))
        assert [len(parts[p]) for p in ("train", "val", "test")] == [n - n_val - n_test, n_val, n_test]
        assert set.union(*parts.values()) == {f"{name}/img{i:02d}.png" for i in range(n)}
        assert {r[2] for r in split["test"] if r[1] == label} == {name.replace("_", " ")}
    base_test = sum(1 for r in split["test"] if r[1] < 2)
    metrics = json.loads((run / "metrics.json").read_text())["metrics"]
    assert (metrics["base"]["n"], metrics["novel"]["n"]) == (base_test, len(split["test"]) - base_test)

    # Another seed draws another split; the same settings draw the same one (rebuilt from config.yaml).
    other = load_dataset(configured_spec(str(folder), split=FolderSplit(seed=8)), folder.parent)
    assert {d.path.name for d in other.test} != {r[0].split("/")[1] for r in split["test"]}
    rerun = invoke("run", "b2n", "--config", run / "config.yaml", "--out", tmp_path / "again", *TINY)
    assert rerun.exit_code == 0, rerun.output
    (again,) = (tmp_path / "again" / "b2n" / "animals" / "coop").iterdir()
    assert again.name == run.name and json.loads((again / "split.json").read_text()) == split

    # An image added later changes what a new draw would give; eval of the run still tests its recorded split.
    (folder / "owl" / "img99.png").write_bytes((folder / "owl" / "img00.png").read_bytes())
    try:
        scores = tmp_path / "scores.json"
        ev = invoke("eval", "--checkpoint", run, "-d", folder, "-p", "b2n", "--device", "cpu", "--json", scores)
        assert ev.exit_code == 0, ev.output
        assert json.loads(scores.read_text())["base"] == metrics["base"]
        assert json.loads(scores.read_text())["novel"]["n"] == metrics["novel"]["n"]
    finally:
        (folder / "owl" / "img99.png").unlink()


def test_a_split_file_replaces_the_split_of_a_folder_and_of_a_registered_dataset(folder, tmp_path):
    split_file = tmp_path / "mine.json"
    rows = {
        "train": [[f"cat/img0{i}.png", 0, "house cat"] for i in range(3)]
        + [[f"owl/img0{i}.png", 1, "barn owl"] for i in range(3)],
        "val": [],
        "test": [["cat/img05.png", 0, "house cat"], ["owl/img05.png", 1, "barn owl"], ["owl/img06.png", 1, "barn owl"]],
    }
    split_file.write_text(json.dumps(rows))
    run = tmp_path / "run"
    args = ["train", "-m", "coop", "-d", folder, "--split-file", split_file, "--epochs", "1", "--shots", "2"]
    result = invoke(*args, "--run-dir", run, "--out", tmp_path, *TINY)
    assert result.exit_code == 0, result.output
    assert yaml.safe_load((run / "config.yaml").read_text())["data"]["split_file"] == str(split_file)
    assert json.loads((run / "metrics.json").read_text())["metrics"]["test"]["n"] == 3
    assert not (run / "split.json").exists()  # the split file is the record

    root = make_tree(tmp_path / "data")
    dtd = load_dataset("dtd", root)
    keep = {"train": [[d.path.relative_to(dtd.image_root).as_posix(), d.label, d.classname] for d in dtd.train[:5]],
            "val": [], "test": [[d.path.relative_to(dtd.image_root).as_posix(), d.label, d.classname]
                                for d in dtd.test[:4]]}  # fmt: skip
    (tmp_path / "dtd_small.json").write_text(json.dumps(keep))
    small = load_dataset(configured_spec("dtd", split_file=tmp_path / "dtd_small.json"), root)
    assert [d.path for d in small.test] == [d.path for d in dtd.test[:4]] and len(small.train) == 5


def test_the_split_settings_enter_a_runs_identity_only_when_changed():
    plain = build_run_config({"method": "coop", "data": {"dataset": "dtd"}})
    assert not {"split_file", "split_seed", "split_val", "split_test", "targets"} & set(plain.identity()["data"])
    changed = build_run_config({"method": "coop", "data": {"dataset": "dtd", "split_seed": 2}})
    assert changed.identity()["data"]["split_seed"] == 2 and changed.hash() != plain.hash()


@pytest.mark.parametrize(
    ("make", "extra", "message", "hint"),
    [
        (lambda p: p.mkdir(), [], "has 0 class folders with images; a classifier needs at least 2", "lay it out as"),
        (lambda p: None, [], "does not exist", "<folder>/<class name>/<image>"),
        (lambda p: write_images(p, {"a": 5, "b": 2}), [], "1 classes have too few images for a train/val/test split",
         "at least 3 images"),
        (lambda p: write_images(p, {"a": 5, "b": 5, "empty": 0}), [], "1 class folders hold no images: empty",
         "add images"),
        (lambda p: write_images(p, {"a": 5, "b": 5}), ["--set", "data.split_val=0.5", "--set", "data.split_test=0.5"],
         "data.split_val + data.split_test = 1 leaves no image to train on", "keep their sum below 1"),
        (lambda p: write_images(p, {"a": 5, "b": 5}), ["--split-file", "missing.json"], "missing.json does not exist",
         "a CoOp split file"),
    ],
)  # fmt: skip
def test_bad_image_folders_end_in_one_message_with_a_hint(tmp_path, make, extra, message, hint):
    folder = tmp_path / "pics"
    make(folder)
    out = tmp_path / "runs"
    result = invoke("train", "-m", "coop", "-d", folder, "--epochs", "1", "--out", out, *TINY, *extra)
    assert result.exit_code == 2, result.output
    (error,) = errors(result.output)
    assert message in error
    assert hint in result.output.split("hint:", 1)[1]
    assert not out.exists()  # nothing written


def test_a_split_file_whose_images_are_missing_and_an_undecodable_image_are_named(folder, tmp_path):
    split_file = tmp_path / "bad.json"
    split_file.write_text(json.dumps({"train": [["cat/img00.png", 0, "cat"], ["owl/nope.png", 1, "owl"]],
                                      "test": [["cat/img01.png", 0, "cat"], ["owl/img01.png", 1, "owl"]]}))  # fmt: skip
    result = invoke("train", "-m", "coop", "-d", folder, "--split-file", split_file, "--out", tmp_path / "r", *TINY)
    assert result.exit_code == 2
    (error,) = errors(result.output)
    assert error == f"error: animals: 1 of 4 listed images are missing under {folder}"
    assert f"first missing: {folder / 'owl' / 'nope.png'}" in result.output
    assert f"hint: the split file's paths are relative to {folder}" in result.output

    broken = write_images(tmp_path / "broken", {"a": 5, "b": 5})
    (broken / "b" / "img03.png").write_text("not an image")
    result = invoke("train", "-m", "coop", "-d", broken, "--epochs", "1", "--out", tmp_path / "r2", *TINY)
    assert result.exit_code == 2
    (error,) = errors(result.output)
    assert error.startswith("error: cannot decode image") and "img03.png" in error
