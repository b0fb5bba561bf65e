"""Results: the run record, the results database, aggregation over seeds, and reports.

Writers: `store = open_results(path)`; `rec = store.start_run(RunRecord.new(...))`; then
`store.finish_run(rec.run_id, metrics, timings)` or `store.fail_run(rec.run_id, error)`.
Readers: `store.query(...)`, `build_report(records)`, `restore report`.

Report names are imported lazily, so a trainer that only writes rows does not import matplotlib.
"""

from __future__ import annotations

import importlib
from typing import Any

from restore.results.db import SQLiteStore, default_results_location, open_results
from restore.results.records import PROTOCOLS, STATUSES, RunRecord, code_version, config_hash, harmonic_mean

_LAZY = {
    "Stat": "restore.results.aggregate",
    "aggregate": "restore.results.aggregate",
    "build_report": "restore.results.report",
    "render_html": "restore.results.report",
    "render_markdown": "restore.results.report",
    "render_terminal": "restore.results.report",
    "write_report": "restore.results.report",
}

__all__ = [
    "PROTOCOLS",
    "STATUSES",
    "RunRecord",
    "SQLiteStore",
    "Stat",
    "aggregate",
    "build_report",
    "code_version",
    "config_hash",
    "default_results_location",
    "harmonic_mean",
    "open_results",
    "render_html",
    "render_markdown",
    "render_terminal",
    "write_report",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'restore.results' has no attribute {name!r}")
