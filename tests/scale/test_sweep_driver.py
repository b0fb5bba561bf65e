"""The sweep driver against a scripted executor (no processes): retries that succeed, one database row
per cell, the live progress display, and the report of the sweep's rows."""

from __future__ import annotations

import io

from rich.console import Console

from restore.results import open_results
from restore.scale.grid import parse_grid
from restore.scale.jobs import Job
from restore.scale.sweep import run_sweep


class Scripted:
    """Runs nothing: a job's outcome is decided by its cell and attempt."""

    device_type, capacity, threads = "cpu", 2, 1

    def __init__(self) -> None:
        self.submitted: list[tuple[str, int]] = []
        self._queue: list[Job] = []
        self.closed = False

    def describe(self) -> str:
        return "scripted"

    def submit(self, job: Job) -> None:
        assert len(self._queue) < self.capacity, "the driver submitted more jobs than the executor's capacity"
        self.submitted.append((job.cell.label, job.attempt))
        self._queue.append(job)

    def wait(self, timeout: float):
        done, self._queue = self._queue[:1], self._queue[1:]
        return [(job, self.outcome(job)) for job in done]

    def outcome(self, job: Job) -> dict:
        seed = job.cell.seed
        if job.cell.method == "maple" and job.attempt == 1:  # a flaky first attempt
            return {"status": "failed", "error": "CUDA error: an illegal memory access (flaky)", "run_id": f"m{seed}"}
        if job.cell.method == "kgcoop":
            return {"status": "failed", "error": "the loss became nan"}
        top1 = 50.0 + 10 * seed + (5 if job.cell.method == "maple" else 0)
        metrics = {"base": {"top1": top1, "top5": 90.0, "n": 10}, "novel": {"top1": top1 - 20, "top5": 80.0, "n": 10}}
        return {"status": "finished", "metrics": metrics, "timings": {"total_s": 1.0},
                "run_id": f"{job.cell.method[0]}{seed}"}  # fmt: skip

    def close(self) -> None:
        self.closed = True


def test_retries_that_succeed_one_row_per_cell_live_progress_and_report(tmp_path):
    grid = parse_grid({
        "methods": ["coop", "maple", "kgcoop"], "datasets": ["dtd"], "seeds": [1, 2],
        "set": {"model.backbone": "random:tiny"},
    })  # fmt: skip
    console = Console(file=io.StringIO(), force_terminal=True, width=200)
    executor = Scripted()
    db = tmp_path / "r.sqlite"
    result = run_sweep(grid, executor=executor, retries=1, db=str(db), out=tmp_path, console=console, live=True)
    assert not executor.closed  # an executor the caller passed in is the caller's to close
    text = console.file.getvalue()
    assert ("b2n/dtd/maple/shots16/seed1", 2) in executor.submitted
    assert sorted(r.cell.label for r in result.finished) == [
        "b2n/dtd/coop/shots16/seed1", "b2n/dtd/coop/shots16/seed2",
        "b2n/dtd/maple/shots16/seed1", "b2n/dtd/maple/shots16/seed2",
    ]  # fmt: skip
    assert [r.attempts for r in result.results if r.cell.method == "maple"] == [2, 2]
    assert [r.attempts for r in result.failed] == [2, 2] and result.attempts == 2 + 4 + 4
    assert "trying again: CUDA error" in text and "after 2 attempts: the loss became nan" in text
    assert "4 done, 2 failed, 0 running, 0 remaining" in text
    assert "ETA" in text  # shown while runs remain
    with open_results(db) as store:
        rows = store.query()
    # One row per cell: maple's retry finished the row its failed attempt opened; kgcoop's two failed
    # attempts (no run id of their own) share one row.
    assert sorted((r.method, r.seed, r.status) for r in rows) == [
        ("coop", 1, "finished"), ("coop", 2, "finished"), ("kgcoop", 1, "failed"), ("kgcoop", 2, "failed"),
        ("maple", 1, "finished"), ("maple", 2, "finished"),
    ]  # fmt: skip
    # The report's numbers are the mean over seeds of the recorded rows: coop base (60 + 70) / 2.
    assert "65.00" in text and "70.00" in text  # coop base mean, maple base mean

    again = run_sweep(grid, executor=Scripted(), retries=0, db=str(db), out=tmp_path, console=console, live=False)
    assert len(again.skipped) == 4 and again.attempts == 2  # only kgcoop's cells run again
    with open_results(db) as store:
        assert len(store.query()) == 6


def test_progress_lines_keep_a_grid_point_tag(tmp_path):
    grid = parse_grid({
        "methods": ["coop"], "datasets": ["dtd"], "seeds": [1], "grid": {"method.n_ctx": [2]},
        "set": {"model.backbone": "random:tiny"},
    })  # fmt: skip
    console = Console(file=io.StringIO(), width=200)
    run_sweep(grid, executor=Scripted(), db=str(tmp_path / "r.sqlite"), out=tmp_path, console=console, live=False)
    assert "done   b2n/dtd/coop/shots16/seed1 [method.n_ctx=2]" in console.file.getvalue()
