"""The runs of a claims sweep: each cell of the sweep file found in the results database by the config hash
the sweep itself skips finished cells by (`expected_hashes`), then the claims (`restore.results.claims`)
checked on them. Here, not in `results`, because finding a cell's runs needs the grid and the engine."""

from __future__ import annotations

from collections.abc import Iterable

from restore.errors import ConfigError
from restore.results.claims import SPLITS, Claim, ClaimRuns, arm_of_point, check_claims
from restore.results.records import RunRecord
from restore.scale.grid import Grid, expand, expected_hashes


def collect_runs(grid: Grid, records: Iterable[RunRecord]) -> ClaimRuns:
    """Match the sweep's cells to finished runs by config hash (on either device type); the latest wins."""
    latest: dict[str, RunRecord] = {}
    for r in records:
        if r.status != "finished" or r.protocol != "b2n" or any(s not in r.metrics for s in SPLITS):
            continue
        old = latest.get(r.config_hash)
        if old is None or (r.finished_at or "", r.run_id) > (old.finished_at or "", old.run_id):
            latest[r.config_hash] = r
    cells = expand(grid)
    out = ClaimRuns(datasets=list(grid.datasets), seeds=list(grid.seeds), expected=set())
    for cell in cells:
        key = (arm_of_point(cell.method, cell.point), cell.dataset, cell.seed)
        out.expected.add(key)
        hashes: set[str] = set()
        for device_type in ("cpu", "cuda"):
            try:
                hashes |= expected_hashes(cell, device_type)
            except ConfigError:  # a precision only the other device runs
                continue
        found = [latest[h] for h in hashes if h in latest]
        if found:
            out.runs[key] = max(found, key=lambda r: (r.finished_at or "", r.run_id))
    return out



def claims_for(grid: Grid, records: Iterable[RunRecord]) -> list[Claim]:
    """The claims checked on the records' runs of the sweep ``grid``."""
    return check_claims(collect_runs(grid, records))
