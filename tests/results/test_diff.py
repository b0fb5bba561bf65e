"""`restore diff`: config keys, metrics and per-layer shift of two hand-made run folders, in the terminal and
as JSON, and the one-line error for a folder that is not a run."""

from __future__ import annotations

import json
import re

import pytest
import yaml
from typer.testing import CliRunner

from restore.cli import app
from restore.results.diff import diff_config, diff_metrics, diff_runs, diff_shift

CONFIG = {
    "method": {"name": "coop", "n_ctx": 16},
    "protocol": "b2n",
    "seed": 1,
    "data": {"dataset": "dtd", "root": "/data", "shots": 16},
    "optim": {"lr": 0.002, "epochs": 10},
    "out": "runs",
}


def _metrics(base, novel, vision=None, text=None):
    metrics = {
        "base": {"top1": base, "top5": 99.0, "n": 100},
        "novel": {"top1": novel, "top5": 98.0, "n": 100},
        "hm": 2 * base * novel / (base + novel),
    }
    if vision is not None:
        metrics["shift"] = {"measure": "activation", "vision": vision, "text": text, "discrepancy": 0.1, "images": 8}
    return {"run_id": "r", "metrics": metrics, "timings": {}, "history": []}


def _run(folder, config, metrics=None):
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text("# header\n" + yaml.safe_dump(config, sort_keys=False))
    if metrics is not None:
        (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


@pytest.fixture
def two_runs(tmp_path):
    other = json.loads(json.dumps(CONFIG))
    other["optim"]["lr"] = 0.004
    other["method"]["n_ctx"] = 4
    other["out"] = "elsewhere"
    other["tracking"] = ["jsonl"]
    a = _run(tmp_path / "a", CONFIG, _metrics(80.0, 70.0, vision=[0.5, 0.25, 0.125], text=[0.2, 0.1]))
    b = _run(tmp_path / "b", other, _metrics(82.5, 69.0, vision=[0.25, 0.25, 0.5], text=[0.1, 0.1, 0.3]))
    return a, b


def test_config_keys_that_differ_with_both_values_and_whether_they_change_results(two_runs):
    d = diff_runs(*two_runs)
    rows = [(c.key, c.a, c.b, c.affects_result) for c in d.config if c.key != "tracking"]
    assert rows == [
        ("method.n_ctx", 16, 4, True),
        ("optim.lr", 0.002, 0.004, True),
        ("out", "runs", "elsewhere", False),
    ]
    (tracking,) = (c for c in d.to_json()["config"] if c["key"] == "tracking")
    assert tracking == {"key": "tracking", "a": None, "b": ["jsonl"], "in_a": False, "in_b": True,
                        "affects_result": False}  # fmt: skip
    assert diff_config(CONFIG, CONFIG) == []


def test_metrics_per_split_and_hm_with_the_difference(two_runs):
    d = diff_runs(*two_runs)
    got = {m.name: (m.a, m.b, m.diff) for m in d.metrics}
    hm_a, hm_b = 2 * 80 * 70 / 150, 2 * 82.5 * 69 / 151.5
    assert list(got) == ["base top1", "novel top1", "hm"]
    assert got["base top1"] == (80.0, 82.5, 2.5) and got["novel top1"] == (70.0, 69.0, -1.0)
    assert got["hm"] == (hm_a, hm_b, pytest.approx(hm_b - hm_a))
    # A split only one run evaluated: its value, no difference.
    xd = {"metrics": {"imagenet": {"top1": 71.0}, "dtd": {"top1": 44.0}}}
    rows = diff_metrics(xd, {"metrics": {"imagenet": {"top1": 72.0}}})
    assert [(m.name, m.a, m.b, m.diff) for m in rows] == [
        ("imagenet top1", 71.0, 72.0, 1.0),
        ("dtd top1", 44.0, None, None),
    ]


def test_per_layer_shift_with_differences_and_missing_layers(two_runs):
    d = diff_runs(*two_runs)
    assert [(s.layer, s.a, s.b, s.diff) for s in d.shift["vision"]] == [
        (0, 0.5, 0.25, -0.25),
        (1, 0.25, 0.25, 0.0),
        (2, 0.125, 0.5, 0.375),
    ]
    assert [(s.layer, s.a, s.b, s.diff) for s in d.shift["text"]] == [
        (0, 0.2, 0.1, -0.1),
        (1, 0.1, 0.1, 0.0),
        (2, None, 0.3, None),
    ]
    assert diff_shift({"metrics": {}}, None) == {}


def test_an_unfinished_run_compares_its_config_and_says_so(tmp_path):
    a = _run(tmp_path / "a", CONFIG, _metrics(80.0, 70.0, vision=[0.5], text=[0.2]))
    b = _run(tmp_path / "b", CONFIG)
    d = diff_runs(a, b)
    assert d.config == [] and [(m.name, m.b) for m in d.metrics] == [
        ("base top1", None),
        ("novel top1", None),
        ("hm", None),
    ]
    assert d.notes == [
        "B has not finished (no metrics.json)",
        "B recorded no feature shift (shift_images=0, or a method without prompts)",
    ]


RUNNER = CliRunner()


def _invoke(*args):
    return RUNNER.invoke(app, [str(a) for a in args], env={"COLUMNS": "120"})


def test_cli_prints_the_three_tables(two_runs):
    result = _invoke("diff", *two_runs)
    assert result.exit_code == 0, result.output
    out = result.output
    assert re.search(r"optim\.lr\s+│ 0\.002\s+│ 0\.004", out)
    assert re.search(r"out \(not part of the result\)\s+│ runs\s+│ elsewhere", out)
    assert re.search(r"base top1\s+│\s+80\.00 │\s+82\.50 │\s+\+2\.50", out)
    assert re.search(r"novel top1\s+│\s+70\.00 │\s+69\.00 │\s+-1\.00", out)
    assert "vision shift per layer" in out and "text shift per layer" in out
    assert re.search(r"2 │\s+0\.1250 │\s+0\.5000 │\s+\+0\.3750", out)
    assert re.search(r"total │\s+0\.8750 │\s+1\.0000 │\s+\+0\.1250", out)


def test_cli_json_is_the_same_comparison(two_runs):
    result = _invoke("diff", *two_runs, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data == json.loads(json.dumps(diff_runs(*two_runs).to_json()))
    assert {"name": "base top1", "a": 80.0, "b": 82.5, "diff": 2.5} in data["metrics"]
    assert data["shift"]["vision"][2] == {"layer": 2, "a": 0.125, "b": 0.5, "diff": 0.375}


def test_cli_a_folder_that_is_not_a_run_is_one_clear_error(two_runs, tmp_path):
    result = _invoke("diff", two_runs[0], tmp_path)
    assert result.exit_code == 2
    lines = result.output.splitlines()
    assert lines[0] == f"error: {tmp_path} is not a run folder (no config.yaml)"
    assert lines[1].startswith("  hint: pass two folders a run wrote") and "Traceback" not in result.output
