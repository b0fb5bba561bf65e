"""The SQLite results store: lifecycle of a run, queries, dead runs, and refusing files it cannot trust."""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
import subprocess
import sys

import pytest

from restore.errors import ConfigError, ResultsError
from restore.results import RunRecord, open_results
from restore.results.db import SCHEMA_VERSION, SQLiteStore

from .conftest import record_run

B2N = {"base": {"top1": 81.25, "top5": 95.0, "n": 1200}, "novel": {"top1": 70.5, "n": 1100}}


def new(method="coop", dataset="dtd", seed=1, **kw):
    config = {"method": method, "dataset": dataset, "seed": seed, **kw.pop("config", {})}
    return RunRecord.new(
        method=method,
        dataset=dataset,
        protocol=kw.pop("protocol", "b2n"),
        seed=seed,
        backbone=kw.pop("backbone", "tiny"),
        config=config,
        **kw,
    )


def raw_rows(path):
    with sqlite3.connect(path) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM runs ORDER BY run_id")]


def test_a_run_is_created_running_and_finished_with_its_metrics(store, db_path):
    rec = store.start_run(new(shots=16, run_dir="/runs/x"))
    assert store.get(rec.run_id).status == "running"
    done = store.finish_run(rec.run_id, B2N, {"train_s": 12.5, "steps": 40})
    # Read back through a separate plain SQLite connection: the columns hold what was written.
    (row,) = raw_rows(db_path)
    assert row["status"] == "finished" and row["finished_at"] and row["error"] is None
    assert json.loads(row["metrics"]) == {**B2N, "hm": pytest.approx(2 * 81.25 * 70.5 / (81.25 + 70.5))}
    assert json.loads(row["timings"]) == {"train_s": 12.5, "steps": 40}
    assert json.loads(row["config"]) == {"method": "coop", "dataset": "dtd", "seed": 1}
    assert (row["method"], row["dataset"], row["protocol"], row["shots"], row["seed"]) == ("coop", "dtd", "b2n", 16, 1)
    assert row["run_dir"] == "/runs/x" and row["config_hash"] == rec.config_hash
    assert store.get(rec.run_id) == done


def test_failed_and_interrupted_runs_keep_their_message_and_partial_metrics(store):
    a = store.start_run(new(seed=1))
    failed = store.fail_run(a.run_id, "loss became NaN at step 12", metrics={"base": {"top1": 10.0}})
    assert (failed.status, failed.error, failed.metrics) == (
        "failed",
        "loss became NaN at step 12",
        {"base": {"top1": 10.0}},
    )
    b = store.start_run(new(seed=2))
    assert store.interrupt_run(b.run_id, "SIGTERM").status == "interrupted"
    assert store.get(b.run_id).error == "SIGTERM"
    assert store.status_counts() == {"failed": 1, "interrupted": 1}


def test_invalid_metrics_leave_the_row_running_and_untouched(store, db_path):
    rec = store.start_run(new())
    before = raw_rows(db_path)
    with pytest.raises(ResultsError, match="missing \\['novel'\\]"):
        store.finish_run(rec.run_id, {"base": {"top1": 80.0}})
    assert raw_rows(db_path) == before


def test_state_changes_follow_the_run_lifecycle(store):
    rec = store.start_run(new())
    store.finish_run(rec.run_id, B2N)
    with pytest.raises(ResultsError, match="already finished; only a running or interrupted run"):
        store.finish_run(rec.run_id, B2N)
    with pytest.raises(ResultsError, match="already finished; it cannot be started again"):
        store.start_run(rec)
    with pytest.raises(ResultsError, match="no run 'nope'"):
        store.get("nope")
    with pytest.raises(ResultsError, match="is finished, not running"):
        store.interrupt_run(rec.run_id)


def test_an_interrupted_run_resumes_under_its_id_but_only_with_its_config(store):
    rec = store.start_run(new())
    store.interrupt_run(rec.run_id)
    with pytest.raises(ResultsError, match="exists with another config"):
        store.start_run(dataclasses.replace(rec, config_hash="0" * 64))
    again = store.start_run(rec)
    assert again.status == "running" and again.started_at == rec.started_at
    assert store.finish_run(rec.run_id, B2N).status == "finished"
    assert len(store.query()) == 1


def test_a_late_finish_after_being_marked_interrupted_still_counts(store):
    rec = store.start_run(new())
    store.mark_interrupted(run_ids=[rec.run_id])
    assert store.get(rec.run_id).status == "interrupted"
    assert store.finish_run(rec.run_id, B2N).status == "finished"


def test_query_filters_and_finished_hashes(store):
    for method in ("coop", "maple"):
        for seed in (1, 2):
            record_run(store, method=method, dataset="dtd", seed=seed, metrics=B2N)
    record_run(
        store, method="coop", dataset="eurosat", seed=1, metrics={"test": {"top1": 50.0}}, protocol="fewshot", shots=4
    )
    running = store.start_run(new(method="coop", dataset="eurosat", seed=3))
    assert len(store.query()) == 6
    assert {r.method for r in store.query(method="maple")} == {"maple"}
    assert len(store.query(method=["coop", "maple"], dataset="dtd", seed=1)) == 2
    assert [r.shots for r in store.query(protocol="fewshot")] == [4]
    assert [r.run_id for r in store.query(status="running")] == [running.run_id]
    assert store.query(method=[]) == []
    finished = store.query(status="finished")
    assert store.finished_hashes() == {r.config_hash for r in finished}
    assert all(store.is_finished(r.config_hash) for r in finished)
    assert not store.is_finished(running.config_hash)


def test_add_run_inserts_a_complete_row_once(store):
    rec = dataclasses.replace(new(), status="finished", metrics=B2N, finished_at="2025-01-01T00:00:00.000000Z")
    store.add_run(rec)
    assert store.get(rec.run_id).metrics["hm"] == pytest.approx(2 * 81.25 * 70.5 / 151.75)
    with pytest.raises(ResultsError, match="already in"):
        store.add_run(rec)


def test_runs_of_a_dead_process_are_marked_interrupted_and_live_ones_are_not(store):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    gone = store.start_run(dataclasses.replace(new(seed=1), pid=dead.pid))
    alive = store.start_run(new(seed=2))  # this process
    assert store.mark_interrupted() == [gone.run_id]
    assert store.get(gone.run_id).status == "interrupted"
    assert f"process {dead.pid}" in store.get(gone.run_id).error
    assert store.get(alive.run_id).status == "running"


def test_runs_without_a_recent_heartbeat_are_marked_interrupted(store):
    other = store.start_run(dataclasses.replace(new(seed=1), host="another-host", pid=1))
    fresh = store.start_run(dataclasses.replace(new(seed=2), host="another-host", pid=1))
    store.heartbeat(fresh.run_id)
    assert store.mark_interrupted(stale_after_s=3600) == []  # both beat within the hour
    with sqlite3.connect(store.path) as conn:  # pretend `other` last beat a day ago
        conn.execute("UPDATE runs SET heartbeat_at = '2000-01-01T00:00:00.000000Z' WHERE run_id = ?", (other.run_id,))
    assert store.mark_interrupted(stale_after_s=3600) == [other.run_id]
    assert "no heartbeat since 2000-01-01" in store.get(other.run_id).error
    assert store.get(fresh.run_id).status == "running"


def test_a_missing_database_is_created_for_writers_and_an_error_for_readers(tmp_path):
    with pytest.raises(ResultsError, match="no results database at") as err:
        open_results(tmp_path / "nope.sqlite", create=False)
    assert "--db" in err.value.hint
    assert not (tmp_path / "nope.sqlite").exists()
    with open_results(tmp_path / "deep" / "er" / "r.sqlite") as s:
        assert s.query() == []
    with open_results(f"sqlite://{tmp_path}/deep/er/r.sqlite", create=False) as s:
        assert isinstance(s, SQLiteStore)
    with sqlite3.connect(tmp_path / "deep" / "er" / "r.sqlite") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_server_urls_are_refused_with_the_supported_schemes(tmp_path):
    with pytest.raises(ConfigError, match="scheme 'postgresql' has no backend") as err:
        open_results("postgresql://db.example/results")
    assert "a file path" in err.value.hint and "sqlite://" in err.value.hint


@pytest.mark.parametrize(
    "content",
    [b"this is a text file, not a database\n" * 10, bytes(range(256)) * 20],
    ids=["text", "binary"],
)
def test_a_file_that_is_not_sqlite_gives_one_clear_error(tmp_path, content):
    path = tmp_path / "r.sqlite"
    path.write_bytes(content)
    with pytest.raises(ResultsError, match="is not a results database \\(not an SQLite file\\)"):
        open_results(path)
    assert path.read_bytes() == content  # untouched


def test_a_truncated_database_gives_one_clear_error(tmp_path, db_path):
    with open_results(db_path) as s:
        for seed in range(40):
            record_run(s, method="coop", dataset="dtd", seed=seed, metrics=B2N)
    with sqlite3.connect(db_path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = db_path.read_bytes()
    broken = tmp_path / "broken.sqlite"
    broken.write_bytes(data[:4096] + b"\x00" * 100 + data[4196 : len(data) // 2])
    with pytest.raises(ResultsError, match=r"is not a readable results database: .*malformed") as err:
        open_results(broken, create=False).query()
    assert "corrupt or truncated" in err.value.hint


def test_another_sqlite_database_is_refused(tmp_path):
    path = tmp_path / "other.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE customers (id INTEGER)")
    with pytest.raises(
        ResultsError, match="SQLite database but not a restore results database \\(tables: customers\\)"
    ):
        open_results(path)


def test_a_newer_schema_is_refused_with_an_upgrade_hint(db_path):
    open_results(db_path).close()
    with sqlite3.connect(db_path) as conn:
        conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    with pytest.raises(ResultsError, match=f"schema version {SCHEMA_VERSION + 1}; this restore reads up to") as err:
        open_results(db_path)
    assert "upgrade" in err.value.hint


def test_a_directory_is_refused(tmp_path):
    with pytest.raises(ResultsError, match="is a directory"):
        open_results(tmp_path)


def test_a_hand_edited_json_column_is_reported_by_run(store, db_path):
    rec = record_run(store, method="coop", dataset="dtd", seed=1, metrics=B2N)
    with sqlite3.connect(db_path) as conn:
        conn.execute("UPDATE runs SET metrics = '{broken' WHERE run_id = ?", (rec.run_id,))
    with pytest.raises(ResultsError, match=f"run '{rec.run_id}': column 'metrics' does not hold valid JSON"):
        store.query()


def test_finishing_is_one_update_that_writes_status_and_json_together(store):
    rec = store.start_run(new())
    statements = []
    store._conn.set_trace_callback(statements.append)
    store.finish_run(rec.run_id, B2N, {"train_s": 1.0})
    store._conn.set_trace_callback(None)
    writes = [s for s in statements if s.lstrip().upper().startswith(("UPDATE", "INSERT", "DELETE"))]
    assert len(writes) == 1
    assert all(col in writes[0] for col in ("status", "metrics", "timings", "finished_at"))
    assert statements[0] == "BEGIN IMMEDIATE" and statements[-1] == "COMMIT"


def test_an_empty_file_becomes_a_results_database(tmp_path):
    path = tmp_path / "empty.sqlite"
    path.touch()
    with open_results(path) as s:
        record_run(s, method="coop", dataset="dtd", seed=1, metrics=B2N)
    with open_results(path, create=False) as s:
        assert [r.method for r in s.query()] == ["coop"]


def test_a_read_only_database_gives_a_clear_error_on_write(db_path):
    with open_results(db_path) as s:
        rec = s.start_run(new())
    with sqlite3.connect(db_path) as conn:  # simulate a file we may read but not write: a query_only connection
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    s = open_results(db_path)
    s._conn.execute("PRAGMA query_only = ON")
    with pytest.raises(ResultsError, match=r"cannot write results database .*readonly") as err:
        s.finish_run(rec.run_id, B2N)
    assert "writable" in err.value.hint
    assert s.get(rec.run_id).status == "running"
    s.close()


@pytest.mark.skipif(sys.platform != "linux", reason="fork start method")
def test_a_store_used_after_fork_opens_its_own_connection(store):
    import multiprocessing as mp

    first = record_run(store, method="coop", dataset="dtd", seed=1, metrics=B2N)
    inherited = store._conn

    def child():
        record_run(store, method="maple", dataset="dtd", seed=1, metrics=B2N)  # the parent's store object
        os._exit(0 if store._conn is not inherited else 3)  # 3: it wrote through the parent's connection

    proc = mp.get_context("fork").Process(target=child)
    proc.start()
    proc.join(timeout=60)
    assert proc.exitcode == 0
    assert sorted(r.method for r in store.query(status="finished")) == ["coop", "maple"]
    assert store.get(first.run_id).status == "finished"
