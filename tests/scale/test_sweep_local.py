"""`restore sweep` with the local executor: runs in child processes, the database as the record of what is
done, a failing cell recorded and retried without stopping the others, and a child killed hard."""

from __future__ import annotations

import os
import signal
import time

import pytest
import yaml
from typer.testing import CliRunner

from restore.scale.grid import expand, parse_grid
from restore.scale.jobs import Job
from restore.scale.local import LocalExecutor
from restore.scale.sweep import run_sweep
from tests.scale.conftest import check_sweep_database, child_env, sweep_grid


@pytest.mark.integration
def test_local_sweep_records_runs_skips_finished_ones_and_survives_a_failing_cell(data_root, tmp_path, monkeypatch):
    for key, value in child_env().items():  # the children import this checkout with one thread
        monkeypatch.setenv(key, value)
    out, db = tmp_path / "runs", tmp_path / "results.sqlite"
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(sweep_grid(data_root)))
    from restore.cli import app

    result = CliRunner().invoke(
        app, ["sweep", str(path), "--out", str(out), "--db", str(db), "--workers", "2", "--retries", "1"]
    )
    assert result.exit_code == 1, result.output  # one run failed: the sweep says so, after the others
    text = result.output
    assert "5 runs (1 protocol, 2 methods, 2 datasets, 1 shot count, 2 seeds)" in text
    assert "local: 2 run(s) at once on the CPU" in text
    assert "failed b2n/eurosat/coop/shots2/seed1 (attempt 1/2), trying again" in text
    assert "failed b2n/eurosat/coop/shots2/seed1 after 2 attempts: EuroSAT: folder" in text
    assert text.count("done   b2n/dtd/") == 4
    assert "4 done, 1 failed, 0 running, 0 remaining" in text
    assert "sweep tiny: 4 finished, 1 failed, 0 finished before (6 run(s) started)" in text
    assert "Base-to-novel · random-tiny · 2 shots" in text  # the report of the sweep's runs
    check_sweep_database(db, out, failed_attempts=2)
    logs = sorted(p.name for p in (out / "sweeps" / "tiny" / "logs").iterdir())
    assert len(logs) == 5 and any("eurosat" in name for name in logs)

    # Again, without the failing cell: every run is in the database, none starts.
    again = run_sweep(parse_grid(sweep_grid(data_root, failing=False)), out=out, db=str(db), workers=2)
    assert again.attempts == 0 and len(again.skipped) == 4 and not again.failed
    # With it: only the failing cell runs again, and it keeps its one row.
    third = run_sweep(path, out=out, db=str(db), workers=2)
    assert third.attempts == 1 and len(third.skipped) == 4 and len(third.failed) == 1
    check_sweep_database(db, out, failed_attempts=1)


@pytest.mark.integration
def test_a_run_whose_process_is_killed_is_a_failed_outcome_not_a_dead_sweep(data_root, tmp_path, monkeypatch):
    for key, value in child_env().items():
        monkeypatch.setenv(key, value)
    (cell,) = expand(parse_grid({**sweep_grid(data_root, failing=False), "methods": ["coop"], "seeds": [1]}))
    executor = LocalExecutor(1, gpus=[], log_dir=tmp_path / "logs")
    try:
        executor.submit(Job(cell, 1, {"config": {**cell.data, "out": str(tmp_path / "runs")}}, 0))
        ((_, proc, _, _),) = executor._running.values()
        time.sleep(1.0)
        os.kill(proc.pid, signal.SIGKILL)
        ((job, outcome),) = executor.wait(timeout=30)
    finally:
        executor.close()
    assert job.cell is cell and outcome["status"] == "failed"
    assert outcome["error"].startswith("the run's process was killed by signal 9 before reporting")
    assert executor.capacity == 1 and executor.threads >= 1
