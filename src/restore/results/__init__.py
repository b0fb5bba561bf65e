"""Results: the run record, the results database, aggregation over seeds, and reports.

Writers: `store = open_results(path)`; `rec = store.start_run(RunRecord.new(...))`; then
`store.finish_run(rec.run_id, metrics, timings)` or `store.fail_run(rec.run_id, error)`.
Readers: `store.query(...)`, `build_report(records)`, `restore report`.
"""

from __future__ import annotations

from restore.results.aggregate import Stat, aggregate
from restore.results.db import ResultsStore, SQLiteStore, default_results_location, open_results
from restore.results.records import PROTOCOLS, STATUSES, RunRecord, code_version, config_hash, harmonic_mean
from restore.results.report import build_report, render_html, render_markdown, render_terminal, write_report

__all__ = [
    "PROTOCOLS",
    "STATUSES",
    "ResultsStore",
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
