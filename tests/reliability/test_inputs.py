"""Issue 18, points 3 and 4: no input ends in a traceback, and the data a protocol needs is checked before the
first step. Each case is one short `error:` line with a `hint:`, an error exit and nothing written that claims
a run exists; data that loads but looks wrong is a visible `warning:` line."""

from __future__ import annotations

import json
import os
import sqlite3

import pytest

from tests.reliability.helpers import TINY, cli, db_rows, edit_split, errors, split_file

MAX_SEED = 2**32 - 1  # the documented largest seed (NumPy's range)
HUGE = "9" * 5000  # past Python's 4300-digit limit of int(str): json and YAML raise ValueError on it


def _run(root, tmp_path, *args, protocol="b2n"):
    out, db = tmp_path / "runs", tmp_path / "results.sqlite"
    result = cli("run", protocol, "-m", "coop", "-d", "dtd", "-r", root, "-o", out, "--db", db, "--epochs", 1,
                 "--batch-size", 4, "--shots", 2, *TINY, *args)  # fmt: skip
    return result, out, db


def _one_error(result, *expected: str, max_len: int = 400) -> str:
    """Exit 2, one `error:` line holding every text in ``expected``, a `hint:` line, no traceback."""
    assert result.exit_code == 2, result.output[-2000:]
    assert "Traceback" not in result.output, result.output[-2000:]
    lines = errors(result.output)
    assert len(lines) == 1, result.output[-2000:]
    for text in expected:
        assert text in lines[0], (text, lines[0])
    assert "  hint: " in result.output, result.output
    assert max(len(line) for line in result.output.splitlines()) <= max_len, "an output line is too long"
    return lines[0]


def _nothing_written(out, db):
    assert not out.exists(), sorted(p.relative_to(out) for p in out.rglob("*"))
    assert not db.exists()


# --- point 3: numbers out of range, read with the config ------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--seed", "99999999999999999999999"], f"seed: 99999999999999999999999 is above the maximum {MAX_SEED}"),
        (["--seed", str(MAX_SEED + 1)], "is above the maximum"),
        (["--set", f"optim.epochs={HUGE}"], "a value cannot be read: Exceeds the limit (4300 digits)"),
        (["--set", f"seed={HUGE}"], "a value cannot be read"),
        (["--set", "optim.epochs=1.0e+30"], "optim.epochs: 1e+30 is above the maximum 1000000"),
        (["--set", "model.text_chunk=1.0e+30"], "model.text_chunk: 1e+30 is above the maximum"),
        (["--set", "method.ctx_init=1.0e+30"], "method (coop).ctx_init: 1e+30 is not a str"),
        (["--set", "method.class_specific=" + HUGE], "a value cannot be read"),
        (["--set", "log_every=-1.0e+30"], "log_every: -1e+30 is below the minimum 1"),
        (["--set", "log_every=-1"], "log_every: -1 is below the minimum 1"),
        (["--set", "data.crop_min_scale=1.0e+300"], "data.crop_min_scale: 1e+300 is above the maximum 1.0"),
        (["--set", "method.n_ctx=1000000000"], "method (coop).n_ctx: 1000000000 is above the maximum 75"),
        (["--set", "method.n_ctx=100000"], "is above the maximum 75"),
        (["--set", "data.image_size=100000"], "data.image_size: 100000 is above the maximum 1024"),
        (["--set", "data.workers=100000"], "data.workers: 100000 is above the maximum 256"),
        (["--set", "data.eval_batch_size=0"], "data.eval_batch_size: 0 is below the minimum 1"),
        (["--set", "data.shots=10000000"], "data.shots: 10000000 is above the maximum 1000000"),
        (["--set", "optim.lr=" + "x" * 100_000], "optim.lr: 'xxxxxxxxxx"),
        (["--set", "optim.epochs=2001-02-30"], "a value cannot be read: day is out of range"),
    ],
)
def test_absurd_numbers_are_one_short_error_before_anything_is_written(shared_root, tmp_path, args, expected):
    result, out, db = _run(shared_root, tmp_path, *args)
    _one_error(result, expected)
    _nothing_written(out, db)


def test_huge_integer_in_a_config_file(shared_root, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(f"optim:\n  epochs: {HUGE}\n")
    result, out, db = _run(shared_root, tmp_path, "-c", config)
    _one_error(result, "run.yaml: a value cannot be read", "4300 digits")
    _nothing_written(out, db)


def test_the_largest_seed_still_runs(shared_root, tmp_path):
    result, _, db = _run(shared_root, tmp_path, "--seed", MAX_SEED, "--epochs", 0, "--set", "shift_images=0")
    assert result.exit_code == 0, result.output
    (row,) = db_rows(db)
    assert row.seed == MAX_SEED and row.status == "finished"


# --- point 3: evaluation-only commands ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--batch-size", "0"], "--batch-size 0 is not from 1 to 65536"),
        (["--batch-size", "-5"], "--batch-size -5 is not from 1 to 65536"),
        (["--workers", "-1"], "--workers -1 is not from 0 to 256"),
        (["--templates", "a {} photo of {}"], "template 'a {} photo of {}' must hold exactly one {}"),
        (["--templates", "a {0} photo of {}"], "must hold exactly one {}"),
        (["--templates", "a {name} photo {}"], "must hold exactly one {}"),
    ],
)
def test_zeroshot_options_are_checked(shared_root, tmp_path, args, expected):
    json_out = tmp_path / "m.json"
    result = cli("zeroshot", "-b", "random:tiny", "-d", "dtd", "-r", shared_root, "--json", json_out, "--quiet", *args)
    _one_error(result, expected)
    assert not json_out.exists()


@pytest.mark.parametrize(
    ("args", "expected"),
    [(["--batch-size", "0"], "--batch-size 0 is not from 1"), (["--workers", "-1"], "--workers -1 is not from 0")],
)
def test_eval_options_are_checked_before_the_checkpoint(shared_root, tmp_path, args, expected):
    result = cli("eval", "-k", tmp_path / "no-run", "-d", "dtd", "-r", shared_root, *args)
    _one_error(result, expected)


# --- point 3: damaged split files and caches --------------------------------------------------------------------
@pytest.mark.parametrize("command", ["run", "verify", "info"])
def test_split_file_with_a_huge_integer(data_root, tmp_path, command):
    edit_split(data_root, lambda d: d["train"][0].__setitem__(1, "HUGE"))
    split_file(data_root).write_text(split_file(data_root).read_text().replace('"HUGE"', HUGE, 1))
    if command == "run":
        result, out, db = _run(data_root, tmp_path)
        _nothing_written(out, db)
    else:
        result = cli("data", command, "dtd", "-r", data_root)
    _one_error(result, "split_zhou_DescribableTextures.json cannot be read", "4300 digits")


def test_split_file_with_an_absurd_label(data_root, tmp_path):
    edit_split(data_root, lambda d: d["train"][0].__setitem__(1, 10**30))
    result, out, db = _run(data_root, tmp_path)
    _one_error(result, "train[0] = ['", "is not [relative_path, label, classname]")
    _nothing_written(out, db)


@pytest.mark.parametrize("content", ["[]", '"a string"', "[" * 100_000 + "]" * 100_000, "{}", '{"format": 3}'])
def test_a_damaged_few_shot_cache_is_drawn_again_and_rewritten(shared_root, tmp_path, monkeypatch, content):
    from restore.data import few_shot, load_dataset

    cache = tmp_path / "cache"
    splits = load_dataset("dtd", shared_root)
    first = few_shot(splits, 2, 1, cache_dir=cache)
    (path,) = cache.rglob("*.json")
    path.write_text(content)
    again = few_shot(splits, 2, 1, cache_dir=cache)
    assert [d.path for d in again.train] == [d.path for d in first.train]
    assert json.loads(path.read_text())["format"] == "restore-fewshot-v1"  # rewritten whole


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_fewshot_out_to_a_read_only_folder(shared_root, tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        result = cli("data", "fewshot", "dtd", "-r", shared_root, "--shots", 2, "--out", folder / "split.json")
        _one_error(result, "cannot write the split file", "Permission denied")
    finally:
        folder.chmod(0o700)


def test_fewshot_out_to_a_read_only_file_system(shared_root, tmp_path):
    target = "/proc/restore-split.json"  # a read-only place whatever the user (procfs refuses new files)
    result = cli("data", "fewshot", "dtd", "-r", shared_root, "--shots", 2, "--out", target)
    _one_error(result, "cannot write the split file /proc/restore-split.json")


def test_fewshot_out_to_a_folder(shared_root, tmp_path):
    result = cli("data", "fewshot", "dtd", "-r", shared_root, "--shots", 2, "--out", tmp_path)
    _one_error(result, f"--out {tmp_path} is a folder")


def test_fewshot_seed_out_of_range(shared_root):
    result = cli("data", "fewshot", "dtd", "-r", shared_root, "--seed", "99999999999999999999999")
    _one_error(result, "--seed 99999999999999999999999 is not from 0 to 4294967295")


# --- point 3: results rows are checked when read ---------------------------------------------------------
@pytest.fixture(scope="module")
def finished_db(shared_root, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("finished")
    result, _, db = _run(shared_root, tmp, "--epochs", 0, "--set", "shift_images=0")
    assert result.exit_code == 0, result.output
    return db


def _edited_copy(db, tmp_path, sql: str):
    copy = tmp_path / "edited.sqlite"
    with sqlite3.connect(db) as src, sqlite3.connect(copy) as dst:
        src.backup(dst)
    with sqlite3.connect(copy) as conn:
        conn.execute("PRAGMA ignore_check_constraints = ON")  # what a hand edit or another program can do
        conn.execute(sql)
    return copy


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("UPDATE runs SET status = 'paused'", "unknown status 'paused'"),
        (
            "UPDATE runs SET metrics = json_set(metrics, '$.base.top1', 5000)",
            "metrics['base']['top1'] = 5000 is not a percentage in [0, 100]",
        ),
    ],
)
@pytest.mark.parametrize("command", [["results", "runs"], ["report"]])
def test_an_edited_results_row_is_a_clear_error(finished_db, tmp_path, sql, expected, command):
    db = _edited_copy(finished_db, tmp_path, sql)
    result = cli(*command, "--db", db)
    line = _one_error(result, "in the database", expected)
    assert "Base" not in result.output and "1314" not in line


# --- point 4: the data a protocol needs, checked before the first step ------------------------------------
@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda d: d.pop("test"), "the base test split has no images"),
        (lambda d: d.__setitem__("test", []), "the base test split has no images"),
        (lambda d: d.__setitem__("test", [e for e in d["test"] if e[1] < 3]), "the novel test split has no images"),
        (lambda d: d.__setitem__("train", []), "the training split has no images"),
    ],
)
def test_a_split_the_protocol_needs_is_empty(data_root, tmp_path, change, expected):
    edit_split(data_root, change)
    result, out, db = _run(data_root, tmp_path)
    _one_error(result, expected)
    _nothing_written(out, db)


def test_a_run_without_training_needs_no_training_images(data_root, tmp_path):
    edit_split(data_root, lambda d: d.__setitem__("train", []))
    result, _, db = _run(data_root, tmp_path, "--epochs", 0, "--set", "shift_images=0")
    assert result.exit_code == 0, result.output
    assert [r.status for r in db_rows(db)] == ["finished"]


def test_empty_class_name_is_an_error(data_root, tmp_path):
    def blank(d):
        for split in ("train", "val", "test"):
            for e in d[split]:
                if e[1] == 2:
                    e[2] = "  "

    edit_split(data_root, blank)
    result, out, db = _run(data_root, tmp_path)
    _one_error(result, "has an empty class name")
    _nothing_written(out, db)


def _warnings(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("warning:")]


def test_suspicious_split_files_are_warned_about(data_root, tmp_path):
    def spoil(d):
        d["train"].append(list(d["train"][0]))  # listed twice
        d["test"].append(list(d["train"][1]))  # a training image also tested
        for split in ("train", "val", "test"):  # labels 0 and 1 both called "red plain"
            for e in d[split]:
                if e[1] == 1:
                    e[2] = d["train"][0][2]

    edit_split(data_root, spoil)
    result = cli("data", "info", "dtd", "-r", data_root)
    assert result.exit_code == 0, result.output
    found = _warnings(result.output)
    assert len(found) == 3, result.output
    assert "1 duplicate entries in 'train'" in found[0]
    assert "1 test images are also training images" in found[1]
    assert "1 class names are used by more than one label" in found[2] and "labels [0, 1]" in found[2]
    run, _, _ = _run(data_root, tmp_path)
    assert run.exit_code == 0, run.output
    assert len(_warnings(run.output)) == 3
    log = next((tmp_path / "runs").rglob("log.txt")).read_text()
    assert "warning: 1 duplicate entries in 'train'" in log


def test_a_clean_split_file_has_no_warning(shared_root):
    result = cli("data", "info", "dtd", "-r", shared_root)
    assert result.exit_code == 0 and not _warnings(result.output), result.output


# --- minor: --shots 0 ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", [["run", "b2n"], ["train"], ["data", "fewshot"]])
def test_shots_help_names_zero(command):
    result = cli(*command, "--help")
    assert "-1 or 0: all" in " ".join(result.output.split()), result.output


def test_an_error_that_echoes_a_huge_class_name_stays_short(data_root, tmp_path):
    def rename(d):
        for split in ("train", "val", "test"):
            for e in d[split]:
                if e[1] == 0:
                    e[2] = "very " * 20_000 + "long"

    edit_split(data_root, rename)
    result, out, db = _run(data_root, tmp_path)
    line = _one_error(result, "tokens long", max_len=1000)
    assert "characters) ..." in line  # the middle is left out, the start and the end are kept
    _nothing_written(out, db)
