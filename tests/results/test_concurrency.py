"""Several writer processes at once lose nothing; a writer killed mid-write leaves no half row."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import sqlite3
import time

import pytest

from restore.results import open_results

from ._workers import metrics_for, record_forever, write_runs

WORKERS, RUNS_EACH = 4, 75


def test_concurrent_writer_processes_lose_nothing(tmp_path):
    path = tmp_path / "shared" / "results.sqlite"  # created by the racing workers themselves
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(WORKERS)
    procs = [ctx.Process(target=write_runs, args=(str(path), w, RUNS_EACH, barrier)) for w in range(WORKERS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=240)
    assert [p.exitcode for p in procs] == [0] * WORKERS

    with open_results(path, create=False) as store:
        records = store.query()
    assert len(records) == WORKERS * RUNS_EACH
    assert {r.run_id for r in records} == {f"w{w}-r{i}" for w in range(WORKERS) for i in range(RUNS_EACH)}
    for r in records:
        w, i = (int(x[1:]) for x in r.run_id.split("-"))
        assert r.status == "finished"
        expected = metrics_for(w, i)
        assert r.metrics["base"] == expected["base"] and r.metrics["novel"] == expected["novel"]
        assert r.timings == {"worker": w, "i": i}
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchall() == [("1",)]


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_a_writer_killed_at_any_moment_leaves_whole_rows(tmp_path):
    path = tmp_path / "results.sqlite"
    open_results(path).close()
    ctx = mp.get_context("spawn")
    proc = ctx.Process(target=record_forever, args=(str(path),))
    proc.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with sqlite3.connect(path, timeout=30) as conn:
            if conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0] >= 30:
                break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()

    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = conn.execute("SELECT status, metrics, timings, finished_at, seed FROM runs").fetchall()
    assert len(rows) >= 30
    running = [r for r in rows if r[0] == "running"]
    assert len(running) <= 1
    for status, metrics, timings, finished_at, seed in rows:
        metrics, timings = json.loads(metrics), json.loads(timings)
        if status == "finished":
            assert metrics["base"] == metrics_for(0, seed)["base"] and "hm" in metrics
            assert timings["i"] == seed and finished_at
        else:
            assert (status, metrics, timings, finished_at) == ("running", {}, {}, None)
    with open_results(path) as store:  # still usable; the dead writer's run (if any) is found and marked
        left_running = [r.run_id for r in store.query(status="running")]
        assert store.mark_interrupted() == left_running
        assert store.query(status="running") == []
