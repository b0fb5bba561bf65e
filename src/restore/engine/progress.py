"""What a run shows and records while it works: rich progress bars (loss, accuracy, lr, ETA) on the
terminal, and a plain-text log file in the run directory that is written whether or not the run is quiet."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Column
from rich.text import Text


def format_seconds(seconds: float) -> str:
    s = max(0, round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class StepsColumn(ProgressColumn):
    """``completed/total``, padded to the width of ``total/total`` and never cut (rich's M/N column is
    shortened to ``200/2…`` when a row is wider than the terminal)."""

    def __init__(self) -> None:
        super().__init__(table_column=Column(no_wrap=True, overflow="ignore"))

    def render(self, task: Task) -> Text:
        total = "?" if task.total is None else str(int(task.total))
        return Text(f"{int(task.completed):>{len(total)}}/{total}", style="progress.download")


class SteadyETAColumn(ProgressColumn):
    """Time left at the average pace since this process started the task: steps done here over the time
    they took. Rich's own column uses the speed of the last few seconds, so a pause (evaluation, the next
    epoch's loader) or a fast first step makes it jump (0:00:05, then 0:05:36); steps counted as done
    when the task started (a resumed run) are not part of the pace."""

    max_refresh = 1.0

    def __init__(self) -> None:
        super().__init__(table_column=Column(no_wrap=True, overflow="ignore"))

    def render(self, task: Task) -> Text:
        return Text(f"ETA {eta_text(task)}", style="progress.remaining")


def eta_text(task: Task) -> str:
    if task.total is None or task.elapsed is None:
        return "-:--:--"
    done_here = task.completed - task.fields.get("start_completed", 0)
    if task.finished:
        return format_seconds(0)
    if done_here <= 0:
        return "-:--:--"
    return format_seconds(task.elapsed / done_here * (task.total - task.completed))


def _bar_width(console_width: int, fixed: int) -> int | None:
    """The bar takes what the fixed columns leave of the terminal's width (at least 5), so that the counts and
    the ETA are never cut; None: no room for a bar."""
    room = console_width - fixed
    return room if room >= 5 else None


class RunLog:
    """Timestamped lines to a log file (appended: a resumed run continues its log) and, unless quiet, to the
    terminal (through the progress display when one is active, so bars stay intact)."""

    def __init__(self, path: str | Path | None = None, *, quiet: bool = False, console: Console | None = None):
        self.path = Path(path) if path is not None else None
        self.quiet = quiet
        self.console = console or Console(stderr=True)
        self._file: IO[str] | None = None
        self.write_error: OSError | None = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 (closed in close())

    def info(self, message: str, *, echo: bool = True) -> None:
        if self._file is not None:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            try:
                for line in message.splitlines() or [""]:
                    self._file.write(f"{stamp} {line}\n")
            except OSError as e:
                self._lost(e)
        if echo and not self.quiet:
            self.console.print(message, markup=False, highlight=False)

    def _lost(self, error: OSError) -> None:
        """The log file cannot be written (a full disk): say so once and go on without it. The log is the
        run's diary, not its result; the next checkpoint save fails with a clear error if the disk stays full."""
        self.write_error = error
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
        self._file = None
        self.console.print(
            f"warning: cannot write the log file {self.path} ({error.strerror or error}); continuing without it",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )

    def close(self) -> None:
        if self._file is not None:
            file, self._file = self._file, None
            try:
                file.close()
            except OSError as e:  # the last buffered line could not be flushed
                self._lost(e)

    def __enter__(self) -> RunLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


PROGRESS_ENV = "RESTORE_PROGRESS_FILE"


class StepSink:
    """A run's training steps (done, total, done when it started, seconds so far) in a small JSON file,
    rewritten at most once a second: how a sweep driver sees inside the cells it runs elsewhere."""

    def __init__(self, path: Path, clock: Callable[[], float]) -> None:
        self.path, self.clock = path, clock
        self.total = self.done = self.start_done = 0
        self.t0 = self.last = clock()

    def start(self, total: int, done: int) -> None:
        self.total, self.done, self.start_done, self.t0 = total, done, done, self.clock()
        self.write()

    def step(self) -> None:
        self.done += 1
        if self.clock() - self.last >= 1.0:
            self.write()

    def write(self) -> None:
        self.last = self.clock()
        data = {"done": self.done, "total": self.total, "start_done": self.start_done, "seconds": self.last - self.t0}
        with contextlib.suppress(OSError):  # progress is a courtesy: a full disk must not stop the run
            tmp = self.path.with_name(f".{self.path.name}.tmp")
            tmp.write_text(json.dumps(data))
            tmp.replace(self.path)


def read_steps(path: Path) -> dict[str, float] | None:
    """What a `StepSink` wrote, or None (not yet written, or being replaced)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("total") else None


WIDE = 110  # terminal columns from which the training bar also shows lr and the elapsed time


class TrainProgress:
    """Two bars: the whole run (with its ETA) and the current epoch, each showing loss, accuracy and lr.

    Quiet (or no terminal and no explicit request) shows nothing; the trainer's log lines still go to the
    log file.
    """

    def __init__(self, log: RunLog, *, enabled: bool | None = None, clock: Callable[[], float] | None = None) -> None:
        self.log = log
        if enabled is None:
            enabled = not log.quiet and sys.stderr.isatty()
        self.enabled = enabled and not log.quiet
        self.clock = clock or time.monotonic  # tests pass a fixed clock
        self._progress: Progress | None = None
        self._total: TaskID | None = None
        self._epoch: TaskID | None = None
        # A sweep's worker names a file (`PROGRESS_ENV`) where the run's step count goes, so that the sweep
        # can show how far its running cells are; written whether or not the bars show.
        sink = os.environ.get(PROGRESS_ENV)
        self.sink = StepSink(Path(sink), self.clock) if sink else None

    def start(self, total_steps: int, done_steps: int = 0) -> None:
        if self.sink is not None:
            self.sink.start(total_steps, done_steps)
        if not self.enabled:
            return
        width = self.log.console.width
        wide = width >= WIDE
        digits = len(str(total_steps))
        fields = "loss {task.fields[loss]}  acc {task.fields[acc]}" + ("  lr {task.fields[lr]}" if wide else "")
        # description "epoch 10/10", steps, the fields (loss 0.1234 acc 100.0% [lr 1.00e-03]), elapsed, ETA.
        fixed = 11 + (2 * digits + 1) + (38 if wide else 24) + (8 if wide else 0) + 12 + 5
        bar = _bar_width(width, fixed)
        columns: list[ProgressColumn] = [TextColumn("{task.description}", table_column=Column(no_wrap=True))]
        if bar is not None:
            columns.append(BarColumn(bar_width=min(bar, 40)))
        columns += [StepsColumn(), TextColumn(fields, table_column=Column(no_wrap=True, overflow="ignore"))]
        if wide:
            columns.append(TimeElapsedColumn())
        columns.append(SteadyETAColumn())
        self._progress = Progress(*columns, console=self.log.console, transient=False, get_time=self.clock)
        self._progress.start()
        fields_values = {"loss": "-", "acc": "-", "lr": "-", "start_completed": done_steps}
        self._total = self._progress.add_task("train", total=total_steps, completed=done_steps, **fields_values)

    def start_epoch(self, epoch: int, epochs: int, steps: int, lr: float) -> None:
        if self._progress is None:
            return
        if self._epoch is not None:
            self._progress.remove_task(self._epoch)
        self._epoch = self._progress.add_task(
            f"epoch {epoch}/{epochs}", total=steps, loss="-", acc="-", lr=f"{lr:.2e}", start_completed=0
        )

    def resume_epoch(self, steps: int) -> None:
        """The epoch bar starts at `steps` (a run resumed inside the epoch; the run's bar started there)."""
        if self._progress is not None and self._epoch is not None and steps:
            self._progress.update(self._epoch, advance=steps, start_completed=steps)

    def step(self, loss: float, acc: float, lr: float) -> None:
        if self.sink is not None:
            self.sink.step()
        if self._progress is None:
            return
        fields = {"loss": f"{loss:.4f}", "acc": f"{acc:.1f}%", "lr": f"{lr:.2e}"}
        for task in (self._total, self._epoch):
            if task is not None:
                self._progress.update(task, advance=1, **fields)

    def stop(self) -> None:
        if self.sink is not None:
            self.sink.write()
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
            self._total = self._epoch = None


class EvalProgress:
    """One bar per evaluated split."""

    def __init__(self, log: RunLog, *, enabled: bool | None = None) -> None:
        if enabled is None:
            enabled = not log.quiet and sys.stderr.isatty()
        self.enabled = enabled and not log.quiet
        self.log = log
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def start(self, label: str, steps: int) -> None:
        if not self.enabled:
            return
        digits = len(str(steps))
        bar = _bar_width(self.log.console.width, len(f"eval {label}") + 2 * digits + 1 + 12 + 3)
        columns: list[ProgressColumn] = [TextColumn(f"eval {label}", table_column=Column(no_wrap=True))]
        if bar is not None:
            columns.append(BarColumn(bar_width=min(bar, 40)))
        self._progress = Progress(*columns, StepsColumn(), SteadyETAColumn(), console=self.log.console, transient=True)
        self._progress.start()
        self._task = self._progress.add_task(label, total=steps)

    def advance(self) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, advance=1)

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
