"""Named points at which a forked child kills itself with SIGKILL, for the kill-and-resume tests.

A kill point wraps one function of the real code (in the child only: it is forked after the patch cannot
leak back) and sends SIGKILL to its own process on the n-th matching call, before or after the real call.
No hook lives in the library: the points are the functions a run really calls — a training step's loss, an
evaluation batch, the atomic rename of a named file, the database's INSERT/UPDATE inside its transaction.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def on_call(owner: Any, name: str, n: int, *, after: bool = False, when: Callable[..., bool] | None = None) -> None:
    """Replace ``owner.name`` so that its n-th matching call is the process's last."""
    real = getattr(owner, name)
    seen = [0]

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if when is not None and not when(*args, **kwargs):
            return real(*args, **kwargs)
        seen[0] += 1
        if seen[0] == n and not after:
            _die()
        out = real(*args, **kwargs)
        if seen[0] == n and after:
            _die()
        return out

    setattr(owner, name, wrapper)


def _renaming(filename: str) -> Callable[..., bool]:
    return lambda src, dst, *a, **k: Path(dst).name == filename


@dataclass(frozen=True)
class KillPoint:
    name: str
    stage: str  # training, evaluation, files, database
    install: Callable[[], None]

    def __str__(self) -> str:
        return self.name


def _training_step(n: int) -> Callable[[], None]:
    def install() -> None:
        from restore.methods.base import PromptedCLIP

        on_call(PromptedCLIP, "compute_loss", n)

    return install


def _eval_batch(n: int) -> Callable[[], None]:
    def install() -> None:
        from restore.methods.base import PromptedCLIP

        on_call(PromptedCLIP, "predict", n)

    return install


def _rename(filename: str, n: int, *, after: bool) -> Callable[[], None]:
    return lambda: on_call(os, "replace", n, after=after, when=_renaming(filename))


def _db(name: str, *, after: bool, when: Callable[..., bool] | None = None, n: int = 1) -> Callable[[], None]:
    def install() -> None:
        from restore.results.db import SQLiteStore

        on_call(SQLiteStore, name, n, after=after, when=when)

    return install


def _shift_profile() -> None:
    import restore.engine.runs as runs  # the run calls measure_shifts by the name it imported

    on_call(runs, "measure_shifts", 1)


def _finishing(self: Any, conn: Any, record: Any, columns: Any) -> bool:
    return record.status == "finished"


# The run these points are spread over: 3 epochs x 3 steps, then base and novel evaluation (3 batches each),
# the feature-shift profile, metrics.json, the database row and run.json.
POINTS = [
    KillPoint("database: inside start_run's transaction", "database", _db("_insert", after=True)),
    KillPoint("database: row started, no run directory yet", "database", _db("start_run", after=True)),
    KillPoint("training: epoch 1, step 2 (no checkpoint yet)", "training", _training_step(2)),
    KillPoint("checkpoint of epoch 1: written, not yet renamed", "files", _rename("last.pt", 1, after=False)),
    KillPoint("database: after the heartbeat of epoch 1", "database", _db("heartbeat", after=True)),
    KillPoint("training: epoch 2, step 2", "training", _training_step(5)),
    KillPoint("checkpoint of epoch 2: just renamed", "files", _rename("last.pt", 2, after=True)),
    KillPoint("training: epoch 3, last step", "training", _training_step(9)),
    KillPoint("model.safetensors: written, not yet renamed", "files", _rename("model.safetensors", 1, after=False)),
    KillPoint("evaluation: base, first batch", "evaluation", _eval_batch(1)),
    KillPoint("evaluation: novel, second batch", "evaluation", _eval_batch(5)),
    KillPoint("evaluation: feature-shift profile", "evaluation", _shift_profile),
    KillPoint("metrics.json: written, not yet renamed", "files", _rename("metrics.json", 1, after=False)),
    KillPoint("database: finish UPDATE done, not committed", "database", _db("_update", after=True, when=_finishing)),
    KillPoint("database: row finished, run.json not yet", "database", _db("finish_run", after=True)),
    KillPoint("run.json: finished, not yet renamed", "files", _rename("run.json", 2, after=False)),
]
