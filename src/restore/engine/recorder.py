"""A run's row in the results database: the one recorder every run goes through.

`restore run` writes its row itself; a sweep worker runs with no database and returns its row
(`run_record`) to the driver, which writes it through the same `Recorder` — one row layout and one config
hash (`RunConfig.hash`) for runs, sweeps (local or Ray) and torchrun.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from restore.engine.plan import RunPlan
from restore.engine.run_config import RunConfig
from restore.errors import ResultsError
from restore.results import RunRecord, open_results
from restore.results.records import new_run_id as record_run_id


def db_location(config: RunConfig) -> str | None:
    """The database a run writes to: ``db`` ('none' turns it off), else $RESTORE_RESULTS_DB, else
    ``<out>/results.sqlite``."""
    if config.db is not None:
        return None if config.db.strip().lower() in ("none", "off", "") else config.db
    return os.environ.get("RESTORE_RESULTS_DB") or str(Path(config.out) / "results.sqlite")


def new_run_id(config: RunConfig, dataset: str) -> str:
    return record_run_id(config.method_name, dataset, config.protocol, config.seed)


def run_record(
    config: RunConfig, *, dataset: str, backbone: str, run_id: str | None, run_dir: str | Path | None = None
) -> RunRecord:
    """The row of a run of ``config`` (resolved) on ``dataset``: what every recorder writes."""
    return RunRecord.new(
        method=config.method_name,
        dataset=dataset,
        protocol=config.protocol,
        seed=config.seed,
        backbone=backbone,
        config=config.identity(),
        shots=config.data.shots if config.data.shots > 0 else 0,
        tag=config.tag,
        run_dir=None if run_dir is None else str(Path(run_dir).resolve()),
        run_id=run_id,
    )


def plan_record(plan: RunPlan, run_id: str | None) -> RunRecord:
    return run_record(plan.config, dataset=plan.dataset, backbone=plan.backbone, run_id=run_id, run_dir=plan.run_dir)


class Recorder:
    """Writes one run's row through its life: start (running), heartbeat, then finished, failed or interrupted.

    ``store`` None (a run with ``db: none``, or a sweep worker whose driver records) makes every call a no-op.
    """

    def __init__(self, store: Any, record: RunRecord) -> None:
        self.store = store
        self.record = record
        self.run_id = record.run_id

    @classmethod
    def for_run(cls, plan: RunPlan, run_id: str) -> Recorder:
        """The recorder of a run that writes its own row: opens its database (a bad --db fails here, before
        anything is written) and holds the row it will start."""
        location = db_location(plan.config)
        return cls(open_results(location) if location is not None else None, plan_record(plan, run_id))

    def start(self) -> None:
        if self.store is not None:
            self.store.start_run(self.record)

    def status(self) -> str | None:
        """The status of this run's row, or None when there is none (or it cannot be read)."""
        try:
            return self.store.get(self.run_id).status if self.store is not None else None
        except ResultsError:
            return None

    def finish_saved(self, metrics: dict[str, Any], timings: dict[str, Any]) -> None:
        """The row of a run whose metrics.json is written: finished with those metrics, whatever state a kill
        left it in (missing, running, interrupted, failed, or finished already)."""
        if self.store is not None and self.status() != "finished":
            self.start()
            self.store.finish_run(self.run_id, metrics, timings)

    def report(self, outcome: dict[str, Any]) -> None:
        """A sweep worker's outcome (finished with metrics, or failed with an error) as this row; a row another
        process already finished stays as it is."""
        if self.store is None:
            return
        try:
            self.start()
        except ResultsError:
            # Re-reported by a finished run folder: fine. No such row: the write itself failed (a full disk),
            # and that first error is what the sweep stops with, not a follow-up lookup.
            if self.status() == "finished":
                return
            raise
        timings = outcome.get("timings") or {"total_s": outcome.get("seconds", 0.0)}
        try:
            if outcome.get("status") == "finished":
                self.finish(outcome.get("metrics") or {}, timings)
            else:
                self.fail(outcome.get("error") or "failed", {}, timings)
        except ResultsError:
            if self.status() != "finished":  # else: another sweep recorded the same finished run first
                raise

    def heartbeat(self) -> None:
        if self.store is not None:
            self.store.heartbeat(self.run_id)

    def finish(self, metrics: dict[str, Any], timings: dict[str, Any]) -> None:
        if self.store is not None:
            self.store.finish_run(self.run_id, metrics, timings)

    def fail(self, error: str, metrics: dict[str, Any], timings: dict[str, Any]) -> None:
        if self.store is not None:
            self.store.fail_run(self.run_id, error, metrics, timings)

    def interrupt(self) -> None:
        if self.store is not None:
            self.store.interrupt_run(self.run_id, "interrupted (Ctrl-C); resume with --resume")

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
