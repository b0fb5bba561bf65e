"""Functions run in separate processes (multiprocessing spawn needs them importable by module path)."""

from __future__ import annotations

import time

from restore.results import RunRecord, open_results


def metrics_for(worker: int, i: int) -> dict:
    """Distinct, checkable numbers per (worker, i)."""
    return {"base": {"top1": 50.0 + worker + i / 1000, "n": i}, "novel": {"top1": 40.0 + worker, "n": worker}}


def write_runs(path: str, worker: int, n: int, barrier) -> None:
    """Open the (possibly not yet existing) database with everyone else at once, then record n runs."""
    barrier.wait()
    with open_results(path, timeout_s=120) as store:
        for i in range(n):
            rec = RunRecord.new(
                method=f"m{worker % 2}",
                dataset=f"d{i % 3}",
                protocol="b2n",
                seed=i,
                backbone="tiny",
                config={"worker": worker, "i": i},
                run_id=f"w{worker}-r{i}",
            )
            store.start_run(rec)
            store.finish_run(rec.run_id, metrics_for(worker, i), {"worker": worker, "i": i})


def record_forever(path: str) -> None:
    """Start and finish runs until killed: the parent kills it at an arbitrary moment."""
    with open_results(path) as store:
        i = 0
        while True:
            rec = store.start_run(
                RunRecord.new(method="coop", dataset="dtd", protocol="b2n", seed=i, backbone="tiny", config={"i": i})
            )
            store.heartbeat(rec.run_id)
            store.finish_run(rec.run_id, metrics_for(0, i), {"i": i, "pad": "x" * 5000})
            i += 1
            time.sleep(0)
