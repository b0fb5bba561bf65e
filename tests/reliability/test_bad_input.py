"""Bad input: each mistake is a non-zero exit with one clear `error:` line saying what was wrong, and leaves
nothing half-written — no run directory and no database row when it is found before the run starts, and a
run recorded as failed (never a metrics file) when it is only found while the run works."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.reliability.helpers import TINY, cli, db_rows, edit_split, errors, truncate


def _run(root, tmp_path, *args, protocol="b2n", method="coop", shots=2):
    out, db = tmp_path / "runs", tmp_path / "results.sqlite"
    command = ["run", protocol] if protocol != "train" else ["train"]
    result = cli(*command, "-m", method, "-d", "dtd", "-r", root, "-o", out, "--db", db, "--epochs", 1,
                 "--batch-size", 4, "--shots", shots, *TINY, *args)  # fmt: skip
    return result, out, db


def _one_error(result, *expected: str) -> str:
    assert result.exit_code not in (0, None), result.output
    assert "Traceback" not in result.output, result.output
    lines = errors(result.output)
    assert len(lines) == 1, result.output
    for text in expected:
        assert text in lines[0], (text, result.output)
    return lines[0]


def _nothing_written(out, db):
    assert not out.exists(), sorted(p.relative_to(out) for p in out.rglob("*"))
    assert not db.exists()


# --- the dataset ----------------------------------------------------------------------------------------
def test_missing_dataset_root(tmp_path):
    result, out, db = _run(tmp_path / "nowhere", tmp_path)
    _one_error(result, "data root", "nowhere", "does not exist")
    _nothing_written(out, db)


def test_empty_dataset_root(tmp_path):
    (tmp_path / "empty").mkdir()
    result, out, db = _run(tmp_path / "empty", tmp_path)
    _one_error(result, "DescribableTextures: folder", "dtd does not exist")
    assert "hint: run `restore data download dtd" in result.output
    _nothing_written(out, db)


def test_dataset_folder_without_its_split_file(data_root, tmp_path):
    (data_root / "dtd" / "split_zhou_DescribableTextures.json").unlink()
    result, out, db = _run(data_root, tmp_path)
    _one_error(result, "split file", "split_zhou_DescribableTextures.json does not exist")
    _nothing_written(out, db)


def test_split_file_whose_paths_do_not_match_the_images(data_root, tmp_path):
    def rename(data):
        for row in data["train"][:3]:
            row[0] = row[0].replace(".jpg", ".png")

    edit_split(data_root, rename)
    result, out, db = _run(data_root, tmp_path)
    _one_error(result, "3 of 84 listed images are missing under")
    assert "3 images are missing, e.g." in result.output and "red_plain_0001.png" in result.output
    assert "restore data verify dtd" in result.output
    _nothing_written(out, db)


def test_split_file_that_is_not_json(data_root, tmp_path):
    (data_root / "dtd" / "split_zhou_DescribableTextures.json").write_text('{"train": [["a.jpg", 0, "a"]')
    result, out, db = _run(data_root, tmp_path)
    _one_error(result, "split_zhou_DescribableTextures.json is not valid JSON")
    _nothing_written(out, db)


# --- corrupt images ----------------------------------------------------------------------------------------
def _corrupt(root, which: str):
    """Truncate the first training image (class 0, a base class: b2n trains on it) or the last test image
    (class 5, a novel class)."""
    split = json.loads((root / "dtd" / "split_zhou_DescribableTextures.json").read_text())
    row = split["train"][0] if which == "train" else split["test"][-1]
    return truncate(root / "dtd" / "images" / row[0])


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("which", ["train", "test"])
def test_corrupt_image_fails_the_run_naming_the_file(data_root, tmp_path, which, workers):
    bad = _corrupt(data_root, which)
    result, out, db = _run(data_root, tmp_path, "--workers", workers, shots=-1)
    _one_error(result, "cannot decode image", str(bad), *(["(in a data-loader worker)"] if workers else []))
    assert "on_corrupt='skip'" in result.output  # the hint names the way out
    (row,) = db_rows(db)
    assert row.status == "failed" and str(bad) in row.error
    (run_dir,) = out.glob("b2n/dtd/coop/*")
    assert json.loads((run_dir / "run.json").read_text())["status"] == "failed"
    assert not (run_dir / "metrics.json").exists()
    if which == "train":
        assert not (run_dir / "model.safetensors").exists()
        return
    # Found at evaluation: the trained model is kept, and once the file is repaired --resume only evaluates.
    from restore.methods.model_file import read_method

    read_method(run_dir / "model.safetensors")
    shutil.copy(next(p for p in bad.parent.iterdir() if p != bad), bad)
    resumed, _, _ = _run(data_root, tmp_path, "--workers", workers, "--resume", shots=-1)
    assert resumed.exit_code == 0, resumed.output
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved["timings"]["resumed_after_epoch"] == 1 and saved["timings"]["steps"] == 6
    (row,) = db_rows(db)
    assert row.status == "finished" and row.metrics["novel"] == saved["metrics"]["novel"]


def test_corrupt_images_are_skipped_and_counted_when_asked(data_root, tmp_path):
    _corrupt(data_root, "train"), _corrupt(data_root, "test")
    result, out, db = _run(data_root, tmp_path, "--set", "data.on_corrupt=skip", shots=-1)
    assert result.exit_code == 0, result.output
    (run_dir,) = out.glob("b2n/dtd/coop/*")
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved["metrics"]["skipped_images"] == 2  # one training image, one test image
    assert saved["metrics"]["base"]["n"] == 3 * 4 and saved["metrics"]["novel"]["n"] == 3 * 4 - 1
    (row,) = db_rows(db)
    assert row.status == "finished" and row.metrics["skipped_images"] == 2
    assert "skipped 1 of 24 images" in (run_dir / "log.txt").read_text()


# --- class names, shots -------------------------------------------------------------------------------------
LONG_NAME = " ".join(["very"] * 80) + " long texture"


@pytest.mark.parametrize("label", [0, 5], ids=["base-class", "novel-class"])
def test_class_name_longer_than_the_context_is_refused_before_the_run(data_root, tmp_path, label):
    def rename(data):
        for split in ("train", "val", "test"):
            for row in data[split]:
                if row[1] == label:
                    row[2] = LONG_NAME

    edit_split(data_root, rename)
    result, out, db = _run(data_root, tmp_path)
    _one_error(result, "tokens long; the text encoder's context holds 77", "very very")
    _nothing_written(out, db)


def test_more_shots_than_a_class_has_takes_all_and_records_a_note(data_root, tmp_path):
    result, out, _db = _run(data_root, tmp_path, shots=16, protocol="train")
    assert result.exit_code == 0, result.output
    (run_dir,) = out.glob("train/dtd/coop/*")
    notes = json.loads((run_dir / "metrics.json").read_text())["notes"]
    assert any("6 classes have fewer than 16 training images (all taken)" in n for n in notes), notes
    assert "fewer than 16 training images" in (run_dir / "log.txt").read_text()


def test_more_shots_than_a_class_has_is_an_error_with_strict_shots(data_root, tmp_path):
    result, out, db = _run(data_root, tmp_path, "--set", "data.strict_shots=true", shots=16, protocol="train")
    _one_error(result, "6 classes have fewer than 16 training images")
    _nothing_written(out, db)


# --- names and keys -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-d", "dtdd"], "unknown dataset 'dtdd'"),
        (["--set", "protocol=b2m"], "protocol: 'b2m' is not one of"),
        (["-m", "cooop"], "unknown method 'cooop'"),
        (["--set", "data.shotz=4"], "unknown config key data.shotz"),
        (["--set", "method.n_ctxx=4"], "unknown config key method (coop).n_ctxx"),
        (["--set", "optim.lr=nan"], "optim.lr: nan is not a finite number"),
        (["--set", "optim.lr=.inf"], "optim.lr: inf is not a finite number"),
    ],
)
def test_unknown_names_keys_and_values(shared_root, tmp_path, args, message):
    result, out, db = _run(shared_root, tmp_path, *args, protocol="train")
    _one_error(result, message)
    _nothing_written(out, db)


def test_unknown_protocol_on_the_command_line(shared_root, tmp_path):
    result, out, db = _run(shared_root, tmp_path, protocol="b2m")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "Invalid value for 'protocol'" in result.output
    assert "'b2m' is not one of 'b2n', 'xd', 'dg', 'fewshot'" in result.output
    _nothing_written(out, db)


def test_unknown_protocol_and_dataset_at_eval(trained, shared_root, tmp_path):
    result = cli("eval", "-k", trained["coop"], "-d", "dtd", "-r", shared_root, "-p", "b2m", "--device", "cpu")
    _one_error(result, "unknown protocol 'b2m'")
    result = cli("eval", "-k", trained["coop"], "-d", "dtdd", "-r", shared_root, "--device", "cpu")
    _one_error(result, "unknown dataset 'dtdd'")


# --- config files -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("method: coop\noptim: {lr: 0.1\n", "is not valid YAML (line 3, column 1)"),
        ("method: coop\n\toptim: 1\n", "is not valid YAML (line 2, column 1)"),
        ("- method\n- coop\n", "must hold a mapping of config sections, not a list"),
        ("method: coop\noptim:\n  lrr: 0.1\n", "unknown config key optim.lrr"),
        ("method: {name: coop, n_ctxx: 2}\n", "unknown config key method (coop).n_ctxx"),
        ("method: coop\n1: 2\nfoo: 3\n", "config key 1 is an int, not a name"),
        ("method: coop\nseed: 2001-01-01\n", "seed: "),
        ("\xff\xfe", "is not a text file"),
    ],
)
def test_bad_yaml_config(shared_root, tmp_path, text, message):
    config = tmp_path / "run.yaml"
    config.write_bytes(text.encode("latin-1"))
    result, out, db = _run(shared_root, tmp_path, "-c", config, protocol="train")
    _one_error(result, message)
    _nothing_written(out, db)


# --- checkpoints at eval ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(shared_root, tmp_path_factory):
    """Run directories of a one-epoch CoOp and MaPLe run on the tiny backbone."""
    base = tmp_path_factory.mktemp("trained")
    dirs = {}
    for method in ("coop", "maple"):
        result = cli("train", "-m", method, "-d", "dtd", "-r", shared_root, "--run-dir", base / method,
                     "--db", "none", "--epochs", 1, "--batch-size", 4, "--shots", 2, *TINY)  # fmt: skip
        assert result.exit_code == 0, result.output
        dirs[method] = base / method
    return dirs


def test_eval_of_a_run_whose_model_is_another_methods(trained, shared_root, tmp_path):
    mixed = tmp_path / "mixed"
    shutil.copytree(trained["coop"], mixed)
    shutil.copy(trained["maple"] / "model.safetensors", mixed / "model.safetensors")
    result = cli("eval", "-k", mixed, "-d", "dtd", "-r", shared_root, "--device", "cpu")
    _one_error(result, "holds a 'maple' model", "config.yaml", "'coop'")


def test_eval_of_a_checkpoint_on_another_architecture(trained, shared_root, tmp_path):
    import dataclasses

    from restore.clip import build_model, get_config, save_clip

    tiny = get_config("tiny")
    other = dataclasses.replace(tiny, name="custom", embed_dim=48)
    weights = save_clip(build_model(other), tmp_path / "other.safetensors")
    result = cli("eval", "-k", trained["coop"], "-b", weights, "-d", "dtd", "-r", shared_root, "--device", "cpu")
    _one_error(result, "was trained on backbone tiny but the loaded backbone is custom")


def test_eval_of_a_training_checkpoint_or_a_missing_model(trained, shared_root, tmp_path):
    last = trained["coop"] / "checkpoints" / "last.pt"
    result = cli("eval", "-k", last, "-d", "dtd", "-r", shared_root, "--device", "cpu")
    _one_error(result, "last.pt")
    result = cli("eval", "-k", tmp_path / "nothing", "-d", "dtd", "-r", shared_root, "--device", "cpu")
    _one_error(result, "no trained model at")
