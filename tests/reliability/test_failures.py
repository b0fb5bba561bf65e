"""Failures recorded as what they are: a run stopped by a full disk during evaluation is recorded `failed`
(run.json and its row) and resumes; a sweep reports the first database error, not a follow-up lookup;
commands that only read open the database read-only; the loader's worker count is not part of a run's
identity, so a resume may change it."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from rich.console import Console

import restore
from restore.errors import ResultsError
from restore.results.db import SQLiteStore
from restore.scale.grid import parse_grid
from restore.scale.sweep import run_sweep
from tests.reliability.helpers import TINY, cli, db_rows
from tests.reliability.test_disk import _can_mount_privately
from tests.scale.test_sweep_driver import Scripted

REPO = Path(__file__).resolve().parents[2]
SRC = Path(restore.__file__).resolve().parents[1]
TRAIN = ["train", "-m", "coop", "-d", "dtd", "--epochs", 2, "--batch-size", 4, "--shots", 2, "--seed", 5, *TINY]


def _child(mode: str, work: Path, data: Path) -> dict:
    if not _can_mount_privately():
        pytest.skip("no private mount namespace here (needs `unshare --mount` and tmpfs; e.g. root in a container)")
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{REPO}", "OMP_NUM_THREADS": "1", "COLUMNS": "250"}
    child = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", sys.executable, "-m", "tests.reliability.failures_child",
         mode, str(work), str(data)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert child.returncode == 0, child.stdout + child.stderr
    return json.loads((work / "report.json").read_text())


@pytest.mark.integration
def test_a_disk_that_fills_up_during_evaluation_records_the_run_failed_and_it_resumes(shared_root, tmp_path):
    report = _child("full-eval", tmp_path, shared_root)
    failed = report["failed"]
    assert failed["exit"] == 2 and "Traceback" not in failed["output"], failed["output"]
    (line,) = failed["errors"]
    assert line.startswith("error: could not write ") and "metrics.json: No space left on device" in line
    # The run directory and the database lie on the full disk; both still say how the run ended.
    state = report["after_failure"]
    assert state["run_json"] == "failed"
    assert [(r["status"], r["error"]) for r in state["rows"]] == [("failed", line.removeprefix("error: "))]
    assert ".reserve" not in report["leftovers"] and "metrics.json" not in report["leftovers"]

    assert report["resumed"]["exit"] == 0, report["resumed"]["output"]
    after = report["after_resume"]
    assert after["run_json"] == "finished"
    assert [(r["status"], r["run_id"]) for r in after["rows"]] == [("finished", state["rows"][0]["run_id"])]
    # ... and it is the run a disk with room gives.
    whole = cli(*TRAIN, "-r", shared_root, "--run-dir", tmp_path / "whole", "--db", "none")
    assert whole.exit_code == 0, whole.output
    assert report["metrics"] == json.loads((tmp_path / "whole" / "metrics.json").read_text())["metrics"]
    expected = torch.load(tmp_path / "whole" / "checkpoints" / "last.pt", weights_only=True)["learnable"]
    got = torch.load(tmp_path / "learnable.pt", weights_only=True)
    assert set(got) == set(expected) and all(torch.equal(got[k], v) for k, v in expected.items())


@pytest.mark.integration
def test_read_only_commands_work_on_a_read_only_database_and_a_run_there_says_why_it_cannot(shared_root, tmp_path):
    report = _child("read-only", tmp_path, shared_root)
    for command in ("report", "runs", "dry_run"):
        result = report[command]
        assert result["exit"] == 0 and not result["errors"], (command, result["output"])
    assert "Traceback" not in report["report"]["output"]
    assert "coop" in report["runs"]["output"] and "finished" in report["runs"]["output"]
    assert "dry run: 1 to run, 1 finished before in" in " ".join(report["dry_run"]["output"].split())
    assert report["files_after"] == report["files"]  # nothing written beside the database
    run = report["run_out"]
    assert run["exit"] == 2 and "Traceback" not in run["output"], run["output"]
    (line,) = run["errors"]
    assert line.startswith("error: cannot write the run directory ") and line.endswith(": Read-only file system")
    assert "hint: choose an output folder you can write to (--out or --run-dir)" in run["output"]


def test_a_sweep_stops_with_the_first_database_error_not_a_follow_up_lookup(tmp_path, monkeypatch):
    grid = parse_grid({"methods": ["coop"], "datasets": ["dtd"], "seeds": [1],
                       "set": {"model.backbone": "random:tiny"}})  # fmt: skip
    db = tmp_path / "r.sqlite"

    def full(self, record):
        raise ResultsError(f"cannot write results database {db}: database or disk is full",
                           hint="check that the file and its folder are writable and the disk is not full")  # fmt: skip

    monkeypatch.setattr(SQLiteStore, "start_run", full)
    console = Console(file=io.StringIO(), width=200)
    with pytest.raises(ResultsError) as info:
        run_sweep(grid, executor=Scripted(), db=str(db), out=tmp_path, console=console, live=False)
    assert info.value.message == f"cannot write results database {db}: database or disk is full"


def _no_time(entry: dict) -> dict:
    return {k: v for k, v in entry.items() if k != "seconds"}


def _learnable(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["learnable"]


@pytest.mark.integration
def test_loader_workers_change_no_result_so_a_resume_may_change_them(shared_root, tmp_path, monkeypatch):
    serial = cli(*TRAIN, "-r", shared_root, "--out", tmp_path / "a", "--db", "none", "--workers", 0)
    parallel = cli(*TRAIN, "-r", shared_root, "--out", tmp_path / "b", "--db", "none", "--workers", 2)
    assert serial.exit_code == 0 and parallel.exit_code == 0, serial.output + parallel.output
    (a,) = (tmp_path / "a").glob("train/dtd/coop/*")
    (b,) = (tmp_path / "b").glob("train/dtd/coop/*")
    assert a.name == b.name  # one identity: the same run folder
    ta, tb = _learnable(a), _learnable(b)
    assert set(ta) == set(tb) and all(torch.equal(ta[k], tb[k]) for k in ta)
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (a, b))
    assert ma["metrics"] == mb["metrics"]
    assert [_no_time(e) for e in ma["history"]] == [_no_time(e) for e in mb["history"]]  # every epoch's loss

    # A run stopped after training (Ctrl-C during evaluation) continues with other workers: same folder, one row.
    import restore.engine.runs as runs

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    db = tmp_path / "c" / "results.sqlite"
    monkeypatch.setattr(runs, "_evaluate_all", interrupted)
    stopped = cli(*TRAIN, "-r", shared_root, "--out", tmp_path / "c", "--db", db, "--workers", 0)
    assert stopped.exit_code == 130, stopped.output
    monkeypatch.undo()
    resumed = cli(*TRAIN, "-r", shared_root, "--out", tmp_path / "c", "--db", db, "--workers", 2, "--resume")
    assert resumed.exit_code == 0, resumed.output
    (c,) = (tmp_path / "c").glob("train/dtd/coop/*")
    assert c.name == a.name
    assert [r.status for r in db_rows(db)] == ["finished"]
    assert json.loads((c / "metrics.json").read_text())["metrics"] == ma["metrics"]
