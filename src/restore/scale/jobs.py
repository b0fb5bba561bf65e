"""What a sweep hands an executor (a `Job`: one attempt at one cell) and what every executor offers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from restore.scale.grid import Cell


@dataclass
class Job:
    """One attempt (1-based) at a cell. ``spec`` is what `restore.scale.worker.run_cell` receives."""

    cell: Cell
    attempt: int
    spec: dict[str, Any]
    key: int  # the cell's position in the sweep: names its log file

    @property
    def name(self) -> str:
        return f"{self.key:04d}-{self.cell.method}-{self.cell.dataset}-s{self.cell.seed}"


class Executor(Protocol):
    """Runs jobs somewhere else than the driver's process, at most ``capacity`` at once."""

    device_type: str  # "cpu" or "cuda": where the runs compute (it decides the precision, hence the hash)
    capacity: int
    threads: int  # torch threads per run

    def describe(self) -> str: ...

    def submit(self, job: Job) -> None: ...

    def wait(self, timeout: float) -> list[tuple[Job, dict[str, Any]]]:
        """Jobs that ended since the last call (waiting up to ``timeout`` seconds for one), with outcomes:
        ``status`` finished, failed, or busy (another live process owns the run directory; nothing ran)."""
        ...

    def close(self) -> None:
        """Stop what still runs (an interrupted sweep) and release the executor's resources."""
        ...


def failed(error: str, **extra: Any) -> dict[str, Any]:
    """The outcome of a job whose run could not report one itself (its process died, Ray lost it)."""
    return {"status": "failed", "error": error, **extra}
