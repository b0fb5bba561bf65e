"""One live owner per run directory, also across processes: a second `restore train` on a directory in use
is refused; a sweep waits for a cell another process owns; two sweeps of one grid train each cell once; a
sweep's runs die with their driver. Every subprocess has a timeout."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from tests.reliability.helpers import TINY, cli, db_rows, errors
from tests.scale.conftest import child_env, sweep_grid

# Holds a run directory the way a run does, in a process of its own, until it is killed.
HOLD = (
    "import sys, time\n"
    "from restore.engine.ownership import acquire\n"
    "lock = acquire(sys.argv[1])\n"
    "print('held', flush=True)\n"
    "time.sleep(300)\n"
)
TRAIN = ["train", "-m", "coop", "-d", "dtd", "--epochs", 2, "--batch-size", 4, "--shots", 2, "--seed", 5, *TINY]


def _hold(run_dir: Path) -> subprocess.Popen:
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], stdout=subprocess.PIPE, text=True,
                              env=child_env())  # fmt: skip
    line = holder.stdout.readline()  # type: ignore[union-attr]
    if line != "held\n":
        holder.kill()
        pytest.fail(f"the holder could not take {run_dir}: {line!r} {holder.wait(30)}")
    return holder


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(30)


def _alive(pid: int) -> bool:
    """Whether any thread of the process still runs. A killed process's leader turns zombie before its other
    threads (torch's) have let go of its files, so the process counts as gone only when all of them have."""
    states = []
    for task in Path(f"/proc/{pid}/task").glob("*/stat"):
        try:
            states.append(task.read_text().rsplit(")", 1)[1].split()[0])
        except (OSError, IndexError):
            continue
    return any(state not in ("Z", "X") for state in states)


def test_a_run_directory_in_use_is_refused_and_free_again_when_its_owner_dies(data_root, tmp_path):
    run_dir, db = tmp_path / "run", tmp_path / "results.sqlite"
    holder = _hold(run_dir)
    try:
        busy = cli(*TRAIN, "-r", data_root, "--run-dir", run_dir, "--db", db, "--resume")
        assert busy.exit_code == 2, busy.output
        assert "Traceback" not in busy.output
        assert errors(busy.output) == [
            f"error: run directory {run_dir} is in use by process {holder.pid} on {socket.gethostname()}"
        ]
        assert "hint: wait for that run to end (or stop it)" in busy.output
        assert sorted(p.name for p in run_dir.iterdir()) == [".owner.lock"]  # nothing of a run was written
        assert not db.exists()
        (run_dir / "theirs.txt").write_text("written by the owner")
        again = cli(*TRAIN, "-r", data_root, "--run-dir", run_dir, "--db", db, "--overwrite")
        assert again.exit_code == 2 and len(errors(again.output)) == 1 and "is in use by" in again.output
        assert (run_dir / "theirs.txt").read_text() == "written by the owner"  # --overwrite deleted nothing
        (run_dir / "theirs.txt").unlink()
    finally:
        holder.send_signal(signal.SIGKILL)  # the lock dies with its holder: no clean-up needed
        holder.wait(30)
    done = cli(*TRAIN, "-r", data_root, "--run-dir", run_dir, "--db", db)
    assert done.exit_code == 0, done.output
    assert [r.status for r in db_rows(db)] == ["finished"]


def test_a_lock_is_exclusive_and_a_refused_run_leaves_no_folders_it_made(tmp_path):
    from restore.engine.ownership import RunBusy, acquire

    run_dir = tmp_path / "out" / "b2n" / "dtd" / "coop" / "run"
    lock = acquire(run_dir)
    with pytest.raises(RunBusy, match=f"run directory {run_dir} is in use by process {os.getpid()} on "):
        acquire(run_dir)  # a second open file of the same process is a second owner too
    lock.release(remove_empty=True)
    assert not (tmp_path / "out").exists()  # every folder it created, nothing else in them: all gone
    (tmp_path / "kept").mkdir()
    with acquire(tmp_path / "kept" / "run") as held:
        (tmp_path / "kept" / "run" / "config.yaml").write_text("seed: 1\n")
        assert held.held
    assert not held.held and (tmp_path / "kept" / "run" / "config.yaml").exists()
    acquire(tmp_path / "kept" / "run").release()  # free again once released


def _cells_grid(root: Path, seeds: list[int], **extra) -> dict:
    grid = {**sweep_grid(root, failing=False), "methods": ["coop"], "seeds": seeds}
    grid["set"] = {**grid["set"], **extra}
    return grid


def _run_dir(grid: dict, out: Path, seed: int) -> Path:
    """Where the sweep's cell of ``seed`` writes (as its worker plans it)."""
    from restore.engine.plan import plan_run
    from restore.scale.grid import expand, parse_grid

    (cell,) = [c for c in expand(parse_grid(grid)) if c.seed == seed]
    return plan_run({**cell.data, "out": str(out), "device": "cpu", "db": "none", "quiet": True}).run_dir


def _finished_lines(run_dir: Path) -> int:
    return sum(" finished: " in line for line in (run_dir / "log.txt").read_text().splitlines())


def _check_one_row_per_cell(db: Path, cells: int) -> None:
    rows = db_rows(db)
    assert [r.status for r in rows] == ["finished"] * cells
    assert len({r.config_hash for r in rows}) == cells and len({r.run_dir for r in rows}) == cells
    for r in rows:
        saved = json.loads((Path(r.run_dir) / "metrics.json").read_text())
        assert r.run_id == saved["run_id"] and r.metrics == saved["metrics"]
        assert _finished_lines(Path(r.run_dir)) == 1  # trained once


@pytest.mark.integration
def test_a_sweep_waits_for_a_cell_another_process_owns(data_root, tmp_path, monkeypatch):
    for key, value in child_env().items():
        monkeypatch.setenv(key, value)
    from restore.scale.grid import parse_grid
    from restore.scale.sweep import run_sweep

    out, db = tmp_path / "runs", tmp_path / "results.sqlite"
    grid = _cells_grid(data_root, [1, 2])
    holder = _hold(_run_dir(grid, out, seed=1))
    console = Console(file=io.StringIO(), width=250)
    outcome: dict = {}
    thread = threading.Thread(target=lambda: outcome.update(result=run_sweep(
        parse_grid(grid), out=out, db=str(db), workers=1, console=console, live=False)), daemon=True)  # fmt: skip
    thread.start()
    try:
        deadline = time.monotonic() + 240
        while "wait   b2n/dtd/coop/shots2/seed1: run directory" not in console.file.getvalue():
            assert thread.is_alive() and time.monotonic() < deadline, console.file.getvalue()
            time.sleep(0.2)
    finally:
        _stop(holder)  # its owner gone, the cell is free: the sweep trains it
    thread.join(240)
    assert not thread.is_alive(), console.file.getvalue()
    result = outcome["result"]
    assert [r.status for r in result.results] == ["finished", "finished"], console.file.getvalue()
    assert "in use by process" in console.file.getvalue()
    _check_one_row_per_cell(db, cells=2)


@pytest.mark.integration
def test_two_sweeps_of_one_grid_at_once_train_each_cell_once(data_root, tmp_path):
    out, db = tmp_path / "runs", tmp_path / "results.sqlite"
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(_cells_grid(data_root, [1, 2, 3], **{"optim.epochs": 2})))
    command = [sys.executable, "-m", "restore", "sweep", str(path), "--out", str(out), "--db", str(db),
               "--workers", "1"]  # fmt: skip
    sweeps = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env=child_env(COLUMNS="250")) for _ in range(2)]  # fmt: skip
    try:
        texts = [s.communicate(timeout=400)[0] for s in sweeps]
    finally:
        for s in sweeps:
            _stop(s)
    for s, text in zip(sweeps, texts, strict=True):
        assert s.returncode == 0, text
        assert "Traceback" not in text
    _check_one_row_per_cell(db, cells=3)
    assert sum(text.count("done   b2n/dtd/coop") for text in texts) >= 3  # each cell ended in one sweep or both


@pytest.mark.integration
def test_a_sweeps_runs_die_with_their_driver(data_root, tmp_path):
    out = tmp_path / "runs"
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(_cells_grid(data_root, [1], **{"optim.epochs": 100000})))
    driver = subprocess.Popen([sys.executable, "-m", "restore", "sweep", str(path), "--out", str(out),
                               "--db", str(tmp_path / "r.sqlite")], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, env=child_env())  # fmt: skip
    worker = None
    try:
        deadline = time.monotonic() + 180
        while worker is None:
            assert driver.poll() is None and time.monotonic() < deadline, "the sweep's run never started"
            for run_json in out.glob("b2n/**/run.json"):
                worker = json.loads(run_json.read_text())["pid"]
            time.sleep(0.2)
        assert worker != driver.pid and _alive(worker)
        driver.send_signal(signal.SIGKILL)
        driver.wait(30)
        deadline = time.monotonic() + 30
        while _alive(worker) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(worker), "the run outlived its sweep driver"
        from restore.engine.ownership import acquire

        acquire(run_json.parent).release()  # and its run directory is free for the next sweep
    finally:
        _stop(driver)
        if worker is not None and _alive(worker):
            os.kill(worker, signal.SIGKILL)
