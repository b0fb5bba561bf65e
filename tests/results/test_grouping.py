"""A report row is one configuration: grouping by config changes, labels, tags and class-subset datasets."""

from __future__ import annotations

import dataclasses
import re
import shutil

import pytest
from typer.testing import CliRunner

from restore.engine.run_config import build_run_config, resolve
from restore.results.aggregate import aggregate, select_runs
from restore.results.grouping import class_subset_note, dataset_label, row_labels
from restore.results.records import RunRecord


def config(method="coop", dataset="dtd", seed=1, protocol="b2n", **changes):
    """The identity a real `restore run` stores, with `changes` (dotted keys) applied as --set would."""
    data: dict = {"method": {"name": method}, "protocol": protocol, "seed": seed, "data": {"dataset": dataset}}
    for key, value in changes.items():
        node = data
        *parents, last = key.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return resolve(build_run_config(data)).identity()


def run(cfg, base, novel, *, seed=1, tag="", finished_at="2025-01-01T00:00:00.000000Z", metrics_extra=None):
    rec = RunRecord.new(
        method=cfg["method"]["name"],
        dataset=cfg["data"]["dataset"],
        protocol=cfg["protocol"],
        seed=seed,
        backbone="ViT-B/16",
        shots=16,
        config=cfg,
        tag=tag,
    )
    metrics = {"base": {"top1": base}, "novel": {"top1": novel}, **(metrics_extra or {})}
    return dataclasses.replace(rec, status="finished", metrics=metrics, finished_at=finished_at).validated()


def test_two_lrs_on_one_dataset_are_two_rows_named_by_the_change():
    a = run(config(), 70.0, 60.0)
    b = run(config(optim__lr=0.01), 50.0, 40.0)
    (table,) = aggregate([a, b]).tables
    by_label = {r.label: r for r in table.rows}
    assert set(by_label) == {"coop (own)", "coop (own) [optim.lr=0.01]"}
    cell = by_label["coop (own) [optim.lr=0.01]"].cells["dtd"]
    assert (cell.base.mean, cell.novel.mean, cell.base.std, cell.base.seeds) == (50.0, 40.0, None, (1,))
    assert by_label["coop (own)"].cells["dtd"].base.mean == 70.0
    assert sum("[key=value] lists the settings its runs changed" in n for n in table.notes) == 1


def test_seeds_of_one_configuration_share_a_row_across_datasets():
    runs = [run(config(dataset=d, seed=s), 60.0 + s, 50.0, seed=s) for d in ("dtd", "eurosat") for s in (1, 2)]
    (table,) = aggregate(runs).tables
    (row,) = table.rows
    assert row.label == "coop (own)" and row.cells["dtd"].base.seeds == (1, 2)
    assert not any("[key=value]" in n for n in table.notes)  # no brackets, no explanation
    assert row.cells["eurosat"].base.mean == pytest.approx((61.0 + 62.0) / 2)


def test_several_changes_are_listed_sorted():
    labels = row_labels([r := run(config(optim__lr=0.01, optim__epochs=5, method__n_ctx=4), 1.0, 1.0)])
    assert labels[r.run_id] == "coop (own) [method.n_ctx=4, optim.epochs=5, optim.lr=0.01]"


def test_machine_dependent_settings_are_named_only_when_they_tell_rows_apart():
    on_gpu = config()
    on_gpu["model"]["precision"] = "bf16"  # what `auto` resolves to on a recent GPU
    alone = run(on_gpu, 70.0, 60.0)
    assert row_labels([alone])[alone.run_id] == "coop (own)"
    fp32 = run(config(), 70.0, 60.0)
    labels = row_labels([alone, fp32])
    assert labels[alone.run_id] == "coop (own) [model.precision=bf16]"
    assert labels[fp32.run_id] == "coop (own) [model.precision=default]"


def test_a_tag_names_the_row_and_two_configs_under_one_tag_stay_apart():
    a = run(config(), 70.0, 60.0, tag="mine")
    assert row_labels([a])[a.run_id] == "coop (own) [mine]"
    b = run(config(optim__lr=0.01), 50.0, 40.0, tag="mine")
    labels = row_labels([a, b])
    assert labels[b.run_id] == "coop (own) [mine; optim.lr=0.01]"
    assert labels[a.run_id] == "coop (own) [mine; optim.lr=default]"


def test_rerunning_a_seed_with_another_config_sets_nothing_aside():
    a = run(config(), 70.0, 60.0, finished_at="2025-01-01T00:00:00.000000Z")
    b = run(config(optim__epochs=3), 50.0, 40.0, finished_at="2025-01-02T00:00:00.000000Z")
    kept, notes = select_runs([a, b])
    assert {r.run_id for r in kept} == {a.run_id, b.run_id} and notes == []


def test_an_exact_repeat_replaces_the_earlier_run_and_the_note_names_both():
    a = run(config(), 70.0, 60.0, finished_at="2025-01-01T00:00:00.000000Z")
    b = run(config(), 72.0, 61.0, finished_at="2025-01-02T00:00:00.000000Z")
    kept, notes = select_runs([b, a])
    assert [r.run_id for r in kept] == [b.run_id]
    assert notes == [
        f"1 finished run(s) repeat the same configuration and seed as a later run, which counts instead: "
        f"{a.run_id} (repeated by {b.run_id})."
    ]


def test_a_method_without_known_defaults_splits_on_any_difference():
    def odd(lr):
        rec = RunRecord.new(
            method="mymethod", dataset="dtd", protocol="b2n", seed=1, backbone="b", config={"lr": lr, "seed": 1}
        )
        metrics = {"base": {"top1": 1.0}, "novel": {"top1": 1.0}}
        return dataclasses.replace(rec, status="finished", metrics=metrics).validated()

    a, b = odd(0.1), odd(0.2)
    labels = row_labels([a, b])
    assert (labels[a.run_id], labels[b.run_id]) == ("mymethod [lr=0.1]", "mymethod [lr=0.2]")
    assert row_labels([a])[a.run_id] == "mymethod"


def test_a_class_subset_is_its_own_column_and_says_so():
    subset = {"extra": {"classes": {"kept": 10, "of": 47}}}
    full = run(config(), 70.0, 60.0)
    part = run(config(data__classes="present"), 90.0, 80.0, metrics_extra=subset)
    assert dataset_label(part) == "dtd (10/47 classes)"
    (table,) = aggregate([full, part]).tables
    assert table.datasets == ("dtd", "dtd (10/47 classes)")
    (row,) = table.rows  # same method settings: one row, two columns
    assert row.cells["dtd (10/47 classes)"].base.mean == 90.0 and row.cells["dtd"].base.mean == 70.0
    all_there = run(config(data__classes="present"), 1.0, 1.0, metrics_extra={"extra": {"classes": {"subset": False}}})
    assert dataset_label(all_there) == "dtd"
    unknown = run(config(data__classes="present"), 1.0, 1.0)
    assert dataset_label(unknown) == "dtd (classes=present)"


def test_class_subset_note_reads_the_loader_note():
    note = "classes='present': kept 4 of 6 classes; dropped 2 with no images on disk: a, b"
    assert class_subset_note(["other", note]) == {"kept": 4, "of": 6}
    assert class_subset_note(["nothing dropped"]) is None


# -- the command line, as a user meets it ------------------------------------------------------------------

ENV = {"COLUMNS": "250", "OMP_NUM_THREADS": "1"}
TINY = ["--backbone", "random:tiny", "--workers", "0", "--quiet", "--set", "data.eval_batch_size=16"]


def invoke(*args):
    from restore.cli import app

    return CliRunner().invoke(app, [str(a) for a in args], env=ENV)


@pytest.mark.integration
def test_cli_two_lrs_a_tag_after_the_fact_and_a_class_subset(tmp_path, capsys):
    from restore.engine.device import torch_threads
    from restore.results import open_results
    from tests.engine.fakes import make_tree

    root, out, db = make_tree(tmp_path / "data"), tmp_path / "runs", tmp_path / "results.sqlite"
    common = ["-d", "dtd", "-r", root, "--shots", 2, "--epochs", 1, "--batch-size", 4, "-o", out, "--db", db, *TINY]
    with torch_threads(1):
        for lr in ("0.002", "0.01"):
            result = invoke("run", "b2n", "-m", "coop", "--seed", 1, "--lr", lr, *common)
            assert result.exit_code == 0, result.output
        report = invoke("report", "--db", db, "--no-published", "--format", "markdown")
        assert report.exit_code == 0, report.output
        assert not re.search(r"\d ± \d", report.output), report.output  # no cell averages the two
        assert "\n> " not in report.output, report.output  # no report-level note: nothing set aside
        rows = re.findall(r"coop \(own\) \[[^\]]*\]", report.output)
        assert sorted(set(rows)) == [
            "coop (own) [data.batch_size=4, optim.epochs=1, optim.lr=0.01]",
            "coop (own) [data.batch_size=4, optim.epochs=1]",
        ], report.output

        with open_results(db) as store:
            fast = next(r for r in store.query() if r.config["optim"]["lr"] == 0.01)
        tagged = invoke("results", "tag", "fast-lr", fast.run_id, "--db", db)
        assert tagged.exit_code == 0 and tagged.output.strip() == f"tagged {fast.run_id} 'fast-lr'"
        report = invoke("report", "--db", db, "--no-published", "--format", "markdown")
        assert "coop (own) [fast-lr]" in report.output
        from restore.cli import main

        assert main(["results", "tag", "x", fast.run_id, "no-such-run", "--db", str(db)]) == 2
        assert "error: no run 'no-such-run'" in capsys.readouterr().err
        with open_results(db) as store:
            assert store.get(fast.run_id).tag == "fast-lr"  # nothing changed: every run is checked first

        for name in ("purple_plain", "yellow_dots"):  # two of six classes not on disk
            shutil.rmtree(root / "dtd" / "images" / name)
        subset = invoke("run", "b2n", "-m", "coop", "--seed", 1, "--set", "data.classes=present", *common)
        assert subset.exit_code == 0, subset.output
        report = invoke("report", "--db", db, "--no-published", "--format", "markdown")
        assert "dtd (4/6 classes)" in report.output, report.output
