"""What a run shows and records while it works: rich progress bars (loss, accuracy, lr, ETA) on the
terminal, and a plain-text log file in the run directory that is written whether or not the run is quiet."""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path
from typing import IO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


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


class TrainProgress:
    """Two bars: the whole run (with its ETA) and the current epoch, each showing loss, accuracy and lr.

    Quiet (or no terminal and no explicit request) shows nothing; the trainer's log lines still go to the
    log file.
    """

    def __init__(self, log: RunLog, *, enabled: bool | None = None) -> None:
        self.log = log
        if enabled is None:
            enabled = not log.quiet and sys.stderr.isatty()
        self.enabled = enabled and not log.quiet
        self._progress: Progress | None = None
        self._total: TaskID | None = None
        self._epoch: TaskID | None = None

    def start(self, total_steps: int, done_steps: int = 0) -> None:
        if not self.enabled:
            return
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}  acc {task.fields[acc]}  lr {task.fields[lr]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.log.console,
            transient=False,
        )
        self._progress.start()
        fields = {"loss": "-", "acc": "-", "lr": "-"}
        self._total = self._progress.add_task("train", total=total_steps, completed=done_steps, **fields)

    def start_epoch(self, epoch: int, epochs: int, steps: int, lr: float) -> None:
        if self._progress is None:
            return
        if self._epoch is not None:
            self._progress.remove_task(self._epoch)
        self._epoch = self._progress.add_task(f"epoch {epoch}/{epochs}", total=steps, loss="-", acc="-", lr=f"{lr:.2e}")

    def resume_epoch(self, steps: int) -> None:
        """The epoch bar starts at `steps` (a run resumed inside the epoch; the run's bar started there)."""
        if self._progress is not None and self._epoch is not None and steps:
            self._progress.update(self._epoch, advance=steps)

    def step(self, loss: float, acc: float, lr: float) -> None:
        if self._progress is None:
            return
        fields = {"loss": f"{loss:.4f}", "acc": f"{acc:.1f}%", "lr": f"{lr:.2e}"}
        for task in (self._total, self._epoch):
            if task is not None:
                self._progress.update(task, advance=1, **fields)

    def stop(self) -> None:
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
        self._progress = Progress(
            TextColumn(f"eval {label}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=self.log.console,
            transient=True,
        )
        self._progress.start()
        self._task = self._progress.add_task(label, total=steps)

    def advance(self) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, advance=1)

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
