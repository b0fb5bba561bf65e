"""The sweep driver: expand a grid, skip what the results database already holds, run the rest on an
executor (local child processes or Ray tasks), retry failures, record every outcome, report.

- Every cell is checked before anything runs (`restore.scale.grid`); a bad cell stops the sweep at once
  with a `ConfigError` naming it.
- A cell whose config hash (the hash the engine records for a run) has a finished row in the database is
  skipped, so a sweep can be stopped (Ctrl-C, a lost node) and started again: it runs what is missing, and
  a run killed half-way resumes from its last epoch checkpoint in its run directory.
- Runs never write the database themselves; the driver writes one row per run from the outcome the run
  returns (`restore.scale.worker`): finished with its metrics, or failed with its error message. A failed
  run is tried again up to ``retries`` more times (the same row, resumed run directory); it never stops
  the other runs.
- A run directory has one live owner (`restore.engine.ownership`): a cell whose directory another process
  works in (a second sweep of the same grid, a `restore run`) is not run twice — the sweep looks at it
  again every ``BUSY_WAIT_S`` seconds and counts it done once that process finished it, without a row of
  its own. A cell found finished in the database just before it would start (by another sweep) is skipped.
  The local executor's runs die with the driver, so a killed driver leaves no run still writing.
- Progress (done, failed, running, remaining, ETA) is a live bar on a terminal and one line per finished
  run otherwise; at the end the report of the sweep's finished runs (`restore.results`) and the failures.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape  # run labels carry tags such as [method.n_ctx=2]
from rich.progress import BarColumn, Progress, TextColumn
from rich.table import Column, Table

from restore.engine.progress import StepsColumn, read_steps
from restore.engine.recorder import Recorder, run_record
from restore.errors import ConfigError
from restore.results import RunRecord, open_results
from restore.results.records import new_run_id
from restore.results.report import build_report, render_terminal
from restore.scale.grid import (
    Cell,
    Grid,
    describe_cells,
    expand,
    load_grid,
    resolved_configs,
    with_command_line,
)
from restore.scale.jobs import Executor, Job
from restore.scale.local import LocalExecutor, visible_gpus

BUSY_WAIT_S = 2.0  # how often a sweep looks again at a cell whose run directory another process owns
# After this many runs failed with the same error, start no new cell: the next would fail the same way (a
# missing data root, a wrong backbone path) and only bury the cause under copies of it.
SAME_FAILURE_STOP = 3


@dataclass
class CellResult:
    """What became of one cell: ``finished``, ``failed`` (after every attempt) or ``skipped`` (done before)."""

    cell: Cell
    status: str
    attempts: int = 0
    run_id: str | None = None
    config_hash: str | None = None
    run_dir: str | None = None
    error: str | None = None
    seconds: float = 0.0
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass
class SweepResult:
    name: str
    db: str
    out: Path
    results: list[CellResult]
    dry_run: bool = False
    stopped: str | None = None  # why the sweep started no more cells (the same failure again and again)

    def _with(self, status: str) -> list[CellResult]:
        return [r for r in self.results if r.status == status]

    @property
    def finished(self) -> list[CellResult]:
        return self._with("finished")

    @property
    def failed(self) -> list[CellResult]:
        return self._with("failed")

    @property
    def skipped(self) -> list[CellResult]:
        return self._with("skipped")

    @property
    def pending(self) -> list[CellResult]:
        """Cells a dry run would start (or an interrupted sweep did not finish)."""
        return self._with("pending")

    @property
    def attempts(self) -> int:
        """Runs started (retries count)."""
        return sum(r.attempts for r in self.results)


def sweep_locations(grid: Grid, out: str | Path | None, db: str | None) -> tuple[Path, str]:
    """Where the sweep's run directories and results database are: --out/--db, else the grid file's
    ``out``/``db``, else ``runs`` and ``$RESTORE_RESULTS_DB`` or ``<out>/results.sqlite``."""
    out_path = Path(out if out is not None else grid.out or "runs").expanduser()
    location = db or grid.db or os.environ.get("RESTORE_RESULTS_DB") or str(out_path / "results.sqlite")
    if location.strip().lower() in ("none", "off", ""):
        raise ConfigError("a sweep needs a results database", hint="it skips finished runs by it; give --db PATH")
    return out_path, location


def run_sweep(
    grid: str | Path | Grid,
    *,
    ray_address: str | None = None,
    executor: Executor | None = None,
    retries: int = 0,
    workers: int | None = None,
    dry_run: bool = False,
    db: str | None = None,
    out: str | Path | None = None,
    console: Console | None = None,
    live: bool | None = None,
    report: bool = True,
    max_cells: int | None = None,
    root: str | Path | None = None,
    overrides: Sequence[str] = (),
    stop_after: int = SAME_FAILURE_STOP,
) -> SweepResult:
    """Run every cell of ``grid`` (a grid file or a parsed `Grid`) that the database does not hold finished.

    ``executor`` overrides the choice made from ``ray_address`` (Ray) or its absence (local processes);
    ``live`` forces the progress bar on or off (default: on a terminal); ``max_cells`` raises the limit on
    the grid's size (default ``$RESTORE_MAX_CELLS`` or 10,000, `restore.scale.grid.check_size`).
    """
    if retries < 0:
        raise ConfigError(f"--retries must be 0 or more, got {retries}")
    console = console or Console(stderr=True)
    g = grid if isinstance(grid, Grid) else load_grid(grid)
    if root is not None or overrides:
        g = with_command_line(g, root=root, overrides=overrides)
    cells = expand(g, limit=max_cells)  # counted first, then every cell checked before anything else happens
    out_path, location = sweep_locations(g, out, db)
    if dry_run:
        return _dry_run(g, cells, out_path, location, ray_address, console)
    own = executor is None
    if executor is None:
        executor = _make_executor(ray_address, workers, out_path / "sweeps" / g.name / "logs")
    store = None
    try:
        configs = {id(c): resolved_configs(c, executor.device_type) for c in cells}
        store = open_results(location)
        done = store.finished_hashes()
        results: list[CellResult] = []
        todo: list[tuple[int, Cell]] = []
        for key, cell in enumerate(cells):
            hit = sorted({c.hash() for c in configs[id(cell)]} & done)
            if hit:
                results.append(CellResult(cell, "skipped", config_hash=hit[0]))
            else:
                todo.append((key, cell))
        console.print(
            f"sweep [bold]{g.name}[/]: {describe_cells(cells)}; {len(cells) - len(todo)} finished before, "
            f"{len(todo)} to run. {executor.describe()}. Results: {location}",
            highlight=False,
        )
        driver = _Driver(executor, store, configs, out_path, retries, console, live, stop_after=stop_after,
                         progress_dir=out_path / "sweeps" / g.name / "progress")  # fmt: skip
        results += driver.run(todo)
    finally:
        if own:
            executor.close()
        if store is not None:
            store.close()
    order = {id(c): i for i, c in enumerate(cells)}
    results.sort(key=lambda r: order[id(r.cell)])
    result = SweepResult(g.name, location, out_path, results, stopped=driver.stopped)
    if report:
        print_report(result, console)
    return result


def _make_executor(ray_address: str | None, workers: int | None, log_dir: Path) -> Executor:
    if ray_address:
        from restore.scale.ray_exec import RayExecutor  # optional: ray is an extra, imported when asked for

        return RayExecutor(ray_address, workers=workers)
    return LocalExecutor(workers, log_dir=log_dir)


# --- running --------------------------------------------------------------------------------------------
class _Driver:
    def __init__(
        self,
        executor: Executor,
        store: Any,
        configs: dict[int, list[Any]],
        out: Path,
        retries: int,
        console: Console,
        live: bool | None,
        *,
        stop_after: int = SAME_FAILURE_STOP,
        progress_dir: Path | None = None,
    ) -> None:
        self.executor, self.store, self.configs, self.out, self.retries = executor, store, configs, out, retries
        self.progress = SweepProgress(console, live=live)
        self.progress_dir = progress_dir
        self._fallback_ids: dict[int, str] = {}
        self.stop_after = stop_after
        self.failures: collections.Counter[str] = collections.Counter()
        self.stopped: str | None = None

    def run(self, todo: list[tuple[int, Cell]]) -> list[CellResult]:
        queue = collections.deque(Job(cell, 1, self._spec(cell, key), key) for key, cell in todo)
        waiting: list[tuple[float, Job]] = []  # cells another live process works on: (when to look again, job)
        started: dict[int, float] = {}
        results: list[CellResult] = []
        running = 0
        self.progress.start(len(todo), self.executor.capacity)
        try:
            while queue or running or waiting:
                now = time.monotonic()
                queue.extend(job for ready, job in waiting if ready <= now)
                waiting = [(ready, job) for ready, job in waiting if ready > now]
                while queue and running < self.executor.capacity:
                    job = queue.popleft()
                    if (done := self._finished_elsewhere(job.cell)) is not None:
                        results.append(CellResult(job.cell, "skipped", attempts=0, config_hash=done))
                        self.progress.elsewhere(job)
                        continue
                    self.executor.submit(job)
                    self.progress.started(job)
                    started[id(job)] = time.monotonic()
                    running += 1
                self.progress.update(running=running)
                if not running:
                    time.sleep(min(BUSY_WAIT_S, max(0.0, min(r for r, _ in waiting) - time.monotonic()))
                                if waiting else 0.0)  # fmt: skip
                    continue
                for job, outcome in self.executor.wait(timeout=0.5):
                    running -= 1
                    self.progress.ended(job)
                    self.progress.running = running
                    seconds = time.monotonic() - started.pop(id(job), time.monotonic())
                    if outcome.get("status") == "busy":  # owned by another live process: wait, record nothing
                        waiting.append((time.monotonic() + BUSY_WAIT_S, job))
                        self.progress.waiting(job, outcome)
                        continue
                    run_id, config_hash = self._record(job, outcome)
                    outcome = {**outcome, "config_hash": config_hash}
                    if outcome.get("status") == "finished":
                        results.append(self._result(job, outcome, run_id, seconds))
                        self.progress.finished(job, outcome, seconds)
                    elif job.attempt <= self.retries:
                        queue.append(dataclasses.replace(job, attempt=job.attempt + 1))
                        self.progress.retrying(job, outcome, self.retries + 1)
                    else:
                        results.append(self._result(job, outcome, run_id, seconds))
                        self.progress.failed(job, outcome, self.retries + 1)
                        if self._same_failure_again(str(outcome.get("error")), queue, waiting, results):
                            queue.clear()
                            waiting = []
                    self.progress.update(running=running)
        except KeyboardInterrupt:
            self.progress.stop()
            left = len(queue) + running
            self.progress.console.print(
                f"[yellow]interrupted[/]: {len(results)} run(s) ended, {left} not finished; their run directories "
                "resume where they stopped when the same sweep runs again",
                highlight=False,
            )
            raise
        finally:
            self.progress.stop()
        return results

    def _same_failure_again(self, error: str, queue: Any, waiting: list, results: list[CellResult]) -> bool:
        """After `stop_after` runs failed with ``error``, the cells not started are left (status pending) and
        the sweep says why; True when it stops starting cells."""
        self.failures[error] += 1
        left = [*queue, *(job for _, job in waiting)]
        if self.stopped is not None or self.failures[error] < self.stop_after or not left:
            return False
        results += [CellResult(job.cell, "pending", attempts=job.attempt - 1) for job in left]
        self.stopped = (
            f"{self.failures[error]} runs failed with the same error, so {len(left)} cell(s) were not started: "
            f"{error}"
        )
        self.progress.total -= len(left)
        self.progress.console.print(
            f"[red]stopping[/]: {escape(self.stopped)}\n  fix the cause and run the same command again: finished "
            "runs are kept, the failed and the unstarted cells run",
            highlight=False,
        )
        return True

    def _finished_elsewhere(self, cell: Cell) -> str | None:
        """The hash of the cell's finished row if another process (a second sweep on the same database)
        finished it since this sweep started, else None."""
        return next((h for h in sorted({c.hash() for c in self.configs[id(cell)]}) if self.store.is_finished(h)),
                    None)  # fmt: skip

    def _spec(self, cell: Cell, key: int) -> dict[str, Any]:
        spec: dict[str, Any] = {"config": {**cell.data, "out": str(self.out)}, "label": cell.label}
        if self.progress_dir is not None:  # where the run writes its step count (`SweepProgress`)
            self.progress_dir.mkdir(parents=True, exist_ok=True)
            spec["progress_file"] = str(self.progress_dir / f"{key:04d}.json")
        return spec

    def _result(self, job: Job, outcome: dict[str, Any], run_id: str, seconds: float) -> CellResult:
        return CellResult(
            job.cell,
            "finished" if outcome.get("status") == "finished" else "failed",
            attempts=job.attempt,
            run_id=run_id,
            config_hash=outcome.get("config_hash"),
            run_dir=outcome.get("run_dir"),
            error=outcome.get("error"),
            seconds=seconds,
            metrics=outcome.get("metrics") or {},
        )

    def _record(self, job: Job, outcome: dict[str, Any]) -> tuple[str, str]:
        """One row per run through the engine's `Recorder`: finished with its metrics, or failed with its error
        (a retry updates it). The row is the one the worker's run built (`plan_record`); a run that failed
        before it was planned (e.g. its data folder is missing) gets the row of the cell's own config.
        Returns the row's run id and config hash."""
        cell = job.cell
        if outcome.get("record"):
            record = RunRecord.from_dict(outcome["record"])
        else:
            resolved = self.configs[id(cell)][0]
            spec = resolved.model.backbone
            backbone = f"random-{spec[7:]}" if spec.startswith("random:") else spec
            record = run_record(resolved, dataset=cell.dataset, backbone=backbone, run_id=None)
        run_id = outcome.get("run_id")
        if not run_id:  # no run folder holds an id: one row per cell, reused by its retries
            if job.key not in self._fallback_ids:
                earlier = self.store.query(config_hash=record.config_hash, status=["failed", "interrupted"])
                self._fallback_ids[job.key] = (
                    earlier[-1].run_id
                    if earlier
                    else new_run_id(record.method, record.dataset, record.protocol, record.seed)
                )
            run_id = self._fallback_ids[job.key]
        record = dataclasses.replace(record, run_id=run_id)
        record = dataclasses.replace(record, host=outcome.get("host", record.host), pid=outcome.get("pid"))
        Recorder(self.store, record).report(outcome)
        return record.run_id, record.config_hash


# --- progress -------------------------------------------------------------------------------------------
def summary(metrics: dict[str, Any]) -> str:
    """``base 71.20  novel 60.10  HM 65.18``: each evaluated split's top-1, and HM for base-to-novel."""
    parts = [f"{k} {v['top1']:.2f}" for k, v in metrics.items() if isinstance(v, dict) and "top1" in v]
    if "hm" in metrics:
        parts.append(f"HM {metrics['hm']:.2f}")
    return "  ".join(parts)


def _fmt_seconds(s: float) -> str:
    s = round(s)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class SweepProgress:
    """Counts (done / failed / running / remaining) and the ETA: a live bar on a terminal, and one line per
    run that ends (above the bar, or alone when there is no terminal)."""

    def __init__(self, console: Console, *, live: bool | None = None) -> None:
        self.console = console
        self.live = console.is_terminal if live is None else live
        self._bar: Any = None
        self._task: Any = None
        self.total = self.n_done = self.n_failed = self.running = 0
        self.t0 = time.monotonic()
        self.clock = time.monotonic
        self.cells: dict[int, Path | None] = {}  # running job -> the file its run writes its steps to

    def started(self, job: Job) -> None:
        path = job.spec.get("progress_file")
        self.cells[id(job)] = Path(path) if path else None
        if path:
            Path(path).unlink(missing_ok=True)  # an earlier attempt's count is not this one's

    def ended(self, job: Job) -> None:
        path = self.cells.pop(id(job), None)
        if path is not None:
            path.unlink(missing_ok=True)

    def inside(self) -> list[float]:
        """How far each running cell's training is (0..1), for the cells that reported their steps."""
        fractions = []
        for path in self.cells.values():
            steps = read_steps(path) if path is not None else None
            if steps is not None:
                fractions.append(min(1.0, max(0.0, steps["done"] / steps["total"])))
        return fractions

    def start(self, total: int, capacity: int) -> None:
        self.total, self.t0 = total, time.monotonic()
        if self.live and total:

            self._bar = Progress(
                TextColumn("sweep"), BarColumn(bar_width=10), StepsColumn(),
                TextColumn("{task.description}", table_column=Column(overflow="fold")),
                console=self.console, transient=False,
            )  # fmt: skip
            self._bar.start()
            self._task = self._bar.add_task(self.counts(), total=total)

    def counts(self) -> str:
        """``2 done, 0 failed, 2 running (45%, 12%), 3 remaining, ETA 12:00``: the running cells' training
        progress in brackets, once their runs reported it."""
        remaining = self.total - self.n_done - self.n_failed
        inside = self.inside()
        shown = f" ({', '.join(f'{100 * f:.0f}%' for f in inside)})" if inside else ""
        text = f"{self.n_done} done, {self.n_failed} failed, {self.running} running{shown}, {remaining} remaining"
        eta = self.eta(inside)
        return text + (f", ETA {_fmt_seconds(eta)}" if eta is not None and remaining else "")

    def eta(self, inside: list[float] | None = None) -> float | None:
        """Seconds left at the pace so far: wall time per cell's worth of work done, counting the ended cells
        and the fraction each running cell has trained (so there is an ETA before the first cell ends);
        None before anything is done."""
        done = self.n_done + self.n_failed + sum(inside if inside is not None else self.inside())
        if done <= 0:
            return None
        return (self.clock() - self.t0) / done * (self.total - done)

    def update(self, *, running: int) -> None:
        self.running = running
        if self._bar is not None:
            self._bar.update(self._task, completed=self.n_done + self.n_failed, description=self.counts())
            self._bar.refresh()  # render every change of state, not only on the refresh timer

    def _line(self, text: str) -> None:
        self.console.print(text, highlight=False)

    def finished(self, job: Job, outcome: dict[str, Any], seconds: float) -> None:
        self.n_done += 1
        self._line(
            f"[green]done[/]   {escape(job.cell.label)} ({_fmt_seconds(seconds)}): "
            f"{summary(outcome.get('metrics') or {})}"
        )
        self._status()

    def elsewhere(self, job: Job) -> None:
        self.n_done += 1
        self._line(f"[green]done[/]   {escape(job.cell.label)}: finished by another process")
        self._status()

    def waiting(self, job: Job, outcome: dict[str, Any]) -> None:
        self._line(f"[yellow]wait[/]   {escape(job.cell.label)}: {escape(str(outcome.get('error')))}")

    def retrying(self, job: Job, outcome: dict[str, Any], attempts: int) -> None:
        self._line(
            f"[yellow]failed[/] {escape(job.cell.label)} (attempt {job.attempt}/{attempts}), trying again: "
            f"{escape(str(outcome.get('error')))}"
        )

    def failed(self, job: Job, outcome: dict[str, Any], attempts: int) -> None:
        self.n_failed += 1
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        self._line(f"[red]failed[/] {escape(job.cell.label)}{tries}: {escape(str(outcome.get('error')))}")
        self._status()

    def _status(self) -> None:
        if self._bar is None:
            self._line(f"  [{self.n_done + self.n_failed}/{self.total}] {self.counts()}")

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=self.n_done + self.n_failed, description=self.counts())
            self._bar.stop()
            self._bar = None


# --- reporting ------------------------------------------------------------------------------------------
def sweep_records(result: SweepResult) -> list:
    """The finished database rows of the sweep's cells, one per config (the last, should a run repeat)."""
    hashes = [r.config_hash for r in result.results if r.status in ("finished", "skipped") and r.config_hash]
    if not hashes:
        return []

    with open_results(result.db, readonly=True) as store:
        records = store.query(config_hash=hashes, status="finished")
    return list({r.config_hash: r for r in records}.values())


def print_report(result: SweepResult, console: Console) -> None:
    """The results tables of the sweep's finished runs (mean ± std over seeds), then the failed cells."""
    console.print(
        f"sweep {result.name}: {len(result.finished)} finished, {len(result.failed)} failed, "
        f"{len(result.skipped)} finished before ({result.attempts} run(s) started)",
        highlight=False,
    )
    if result.stopped:
        console.print(f"[red]stopped early[/]: {escape(result.stopped)}", highlight=False)
    records = sweep_records(result)
    if records:
        render_terminal(build_report(records, source=result.db, with_plots=False, title=f"sweep {result.name}"),
                        console)  # fmt: skip
    if result.failed:
        t = Table(title=f"{len(result.failed)} failed run(s)", title_style="bold red")
        for col in ("run", "attempts", "error"):
            t.add_column(col, overflow="fold")
        for r in result.failed:
            t.add_row(escape(r.cell.label), str(r.attempts), escape(r.error or ""))
        console.print(t)


def _dry_run(
    g: Grid, cells: list[Cell], out: Path, location: str, ray_address: str | None, console: Console
) -> SweepResult:
    """Which runs the sweep would start, and which the database holds finished, without running any."""
    device_type = "cuda" if ray_address is None and visible_gpus() else "cpu"
    done: set[str] = set()
    if Path(location.removeprefix("sqlite://")).expanduser().exists():
        with open_results(location, readonly=True) as store:  # a dry run writes nothing, anywhere
            done = store.finished_hashes()
    results = []
    t = Table(title=f"sweep {g.name}: {describe_cells(cells)}")
    for col in ("#", "run", "config hash", "state"):
        t.add_column(col)
    for i, cell in enumerate(cells, 1):
        hashes = sorted(c.hash() for c in resolved_configs(cell, device_type))
        hit = sorted(set(hashes) & done)
        results.append(CellResult(cell, "skipped" if hit else "pending", config_hash=(hit or hashes)[0]))
        t.add_row(str(i), escape(cell.label), (hit or hashes)[0][:12], "[green]finished[/]" if hit else "to run")
    console.print(t)
    note = " (hashes as on this machine's device)" if ray_address else ""
    n_todo = sum(r.status == "pending" for r in results)
    console.print(
        f"dry run: {n_todo} to run, {len(cells) - n_todo} finished before in {location}{note}; nothing started",
        highlight=False,
    )
    return SweepResult(g.name, location, out, results, dry_run=True)
