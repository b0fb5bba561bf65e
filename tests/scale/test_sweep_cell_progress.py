"""A sweep sees inside its running cells: each run writes its training steps to the file its spec names, and
the sweep's counts show each running cell's share and an ETA that counts it (before any cell ended)."""

from __future__ import annotations

import io
import json

from rich.console import Console

from restore.engine.progress import StepSink
from restore.scale.grid import expand, parse_grid
from restore.scale.jobs import Job
from restore.scale.sweep import SweepProgress
from restore.scale.worker import run_cell
from tests.scale.conftest import sweep_grid


class Clock:
    now = 500.0

    def __call__(self) -> float:
        return self.now


def _jobs(tmp_path, n: int) -> list[Job]:
    cells = expand(parse_grid({"methods": ["coop"], "datasets": ["dtd"], "seeds": list(range(1, n + 1)),
                               "set": {"model.backbone": "random:tiny"}}))  # fmt: skip
    return [Job(c, 1, {"progress_file": str(tmp_path / f"{i}.json")}, i) for i, c in enumerate(cells)]


def test_counts_show_running_cells_and_an_eta_before_any_cell_ended(tmp_path):
    clock = Clock()
    progress = SweepProgress(Console(file=io.StringIO(), width=80), live=False)
    progress.clock = clock
    progress.start(4, 2)
    progress.t0 = clock.now
    jobs = _jobs(tmp_path, 4)
    for job in jobs[:2]:
        progress.started(job)
    progress.running = 2
    assert progress.counts() == "0 done, 0 failed, 2 running, 4 remaining"  # nothing reported yet: no ETA
    for job, done in ((jobs[0], 50), (jobs[1], 25)):
        sink = StepSink(tmp_path / f"{job.key}.json", clock)
        sink.start(100, 0)
        sink.done = done
        sink.write()
    clock.now += 30.0
    # 0.75 of a cell's work in 30 s: 40 s a cell, 3.25 cells left.
    assert progress.counts() == "0 done, 0 failed, 2 running (50%, 25%), 4 remaining, ETA 2:10"
    progress.ended(jobs[0])
    progress.n_done, progress.running = 1, 1
    assert not (tmp_path / "0.json").exists()  # the ended cell's file is gone
    assert progress.counts() == "1 done, 0 failed, 1 running (25%), 3 remaining, ETA 1:06"  # 30 / 1.25 * 2.75 = 66 s


def test_a_sweep_cell_writes_its_training_steps_where_its_spec_says(data_root, tmp_path):
    cell = expand(parse_grid({**sweep_grid(data_root, failing=False), "methods": ["coop"], "seeds": [1]}))[0]
    steps_file = tmp_path / "steps.json"
    outcome = run_cell({"config": {**cell.data, "out": str(tmp_path / "runs")}, "threads": 1, "device": "cpu",
                        "progress_file": str(steps_file)})  # fmt: skip
    assert outcome["status"] == "finished", outcome.get("error")
    steps = json.loads(steps_file.read_text())
    history = json.loads((tmp_path / "runs").joinpath(outcome["run_dir"], "metrics.json").read_text())["timings"]
    assert steps["done"] == steps["total"] == history["steps"] and steps["start_done"] == 0
