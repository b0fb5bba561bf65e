"""The results database: one row per run, written atomically, safe with many writer processes.

`open_results(location)` opens a file path (or `sqlite://PATH`) as SQLite; other schemes (a shared server,
e.g. `postgresql://...`) are refused with the supported ones.

SQLite runs in WAL mode with a busy timeout, and every state change is one `BEGIN IMMEDIATE` transaction
whose single UPDATE writes the status together with the JSON columns: a killed writer leaves either the old
row or the new one, never half of each.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

from restore.errors import ConfigError, ResultsError
from restore.results.records import RunRecord, canonical_json, utc_now

SCHEMA_VERSION = 1
APPLICATION = "restore-results"
DEFAULT_TIMEOUT_S = 60.0
#: Environment variable naming the default results database.
ENV_LOCATION = "RESTORE_RESULTS_DB"

_COLUMNS = (
    "run_id",
    "method",
    "tag",
    "dataset",
    "protocol",
    "shots",
    "seed",
    "backbone",
    "config_hash",
    "config",
    "code_version",
    "status",
    "error",
    "metrics",
    "timings",
    "run_dir",
    "host",
    "pid",
    "started_at",
    "heartbeat_at",
    "finished_at",
)
_JSON_COLUMNS = ("config", "metrics", "timings")

_SCHEMA = f"""
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE runs (
    run_id       TEXT PRIMARY KEY,
    method       TEXT NOT NULL,
    tag          TEXT NOT NULL DEFAULT '',
    dataset      TEXT NOT NULL,
    protocol     TEXT NOT NULL,
    shots        INTEGER,
    seed         INTEGER NOT NULL,
    backbone     TEXT NOT NULL,
    config_hash  TEXT NOT NULL,
    config       TEXT NOT NULL,
    code_version TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('running', 'finished', 'failed', 'interrupted')),
    error        TEXT,
    metrics      TEXT NOT NULL DEFAULT '{{}}',
    timings      TEXT NOT NULL DEFAULT '{{}}',
    run_dir      TEXT,
    host         TEXT NOT NULL,
    pid          INTEGER,
    started_at   TEXT NOT NULL,
    heartbeat_at TEXT,
    finished_at  TEXT
);
CREATE INDEX runs_by_cell ON runs (protocol, method, dataset);
CREATE INDEX runs_by_hash ON runs (config_hash, status);
CREATE INDEX runs_by_status ON runs (status);
INSERT INTO meta (key, value) VALUES ('schema_version', '{SCHEMA_VERSION}'), ('application', '{APPLICATION}');
"""

Filter = str | int | Iterable[str] | Iterable[int] | None


def default_results_location() -> str:
    """`$RESTORE_RESULTS_DB`, else `runs/results.sqlite` under the current directory."""
    return os.environ.get(ENV_LOCATION) or str(Path("runs") / "results.sqlite")


def _sqlite_path(location: str) -> Path:
    return Path(location.removeprefix("sqlite://")).expanduser()


def open_results(
    location: str | Path | None = None,
    *,
    create: bool = True,
    readonly: bool = False,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> SQLiteStore:
    """Open (and with `create`, make) the results store at `location` (default `default_results_location()`).

    A file path or `sqlite://PATH` is SQLite. `create=False` makes a missing database an error, which is what
    readers (reports) want: a typo in the path should not silently produce an empty report. `readonly`
    (implies `create=False`) opens it for reading only: it works on a read-only file, folder or file system,
    and any write fails.
    """
    loc = str(location if location is not None else default_results_location())
    scheme = loc.split("://", 1)[0].lower() if "://" in loc else ""
    if scheme not in ("", "sqlite"):
        raise ConfigError(
            f"unsupported results location {loc!r}: scheme {scheme!r} has no backend",
            hint="supported: a file path, sqlite:// (a shared server database is not built yet)",
        )
    return SQLiteStore(_sqlite_path(loc), create=create and not readonly, readonly=readonly, timeout_s=timeout_s)


def _checked_on_read(record: RunRecord) -> RunRecord:
    """A row read back passes the same checks as one written (status, accuracies in [0, 100], ...): a row
    edited by hand is one clear error naming the run, not a KeyError in a report or a Base of 1314.44."""
    try:
        record.validated()
    except ResultsError as e:
        raise ResultsError(
            f"run {record.run_id!r} in the database: {e.message}",
            hint="the row was edited by hand or by another program; fix or delete it",
        ) from None
    return record


def _pid_alive(pid: int) -> bool:
    """True when a process with this pid runs (zombies count as gone); unknown (other user) counts as alive."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _as_list(value: Filter) -> list[Any] | None:
    if value is None:
        return None
    if isinstance(value, (str, int)):
        return [value]
    return list(value)


class SQLiteStore:
    """The results store, an SQLite file. One connection per store; a lock makes it usable from several threads.

    Writers: `start_run` → (`heartbeat`)* → `finish_run` | `fail_run` | `interrupt_run`.
    Readers: `get`, `query`, `finished_hashes`, `is_finished`, `status_counts`.
    """

    def __init__(
        self, path: Path, *, create: bool = True, readonly: bool = False, timeout_s: float = DEFAULT_TIMEOUT_S
    ) -> None:
        self.path = path
        self.readonly = readonly
        self.location = str(path)
        self.timeout_s = timeout_s
        self._lock = threading.RLock()
        self._host = socket.gethostname()
        self._inherited: list[sqlite3.Connection] = []
        if path.is_dir():
            raise ResultsError(
                f"results database {path} is a directory", hint="give a file path, e.g. runs/results.sqlite"
            )
        if not path.exists():
            if not create:
                raise ResultsError(
                    f"no results database at {path}",
                    hint=f"check --db (or ${ENV_LOCATION}); the first run that records results creates the database",
                )
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise ResultsError(f"cannot create the folder for results database {path}: {e}") from None
        self._check_header()
        self._connect()
        try:
            self._check_schema()
        except BaseException:
            self._conn.close()
            raise

    # -- opening -------------------------------------------------------------------------------------------

    def _check_header(self) -> None:
        """Refuse a file that is not SQLite before SQLite gets a chance to give a vaguer error."""
        try:
            with open(self.path, "rb") as f:
                head = f.read(16)
        except FileNotFoundError:
            return
        except OSError as e:
            raise ResultsError(f"cannot read results database {self.path}: {e}") from None
        if head and head != b"SQLite format 3\x00":
            raise ResultsError(
                f"{self.path} is not a results database (not an SQLite file)",
                hint="point --db at the .sqlite file that runs wrote, or at a new path to start a new database",
            )

    def _connect(self) -> None:
        try:
            self._conn = self._open_readonly() if self.readonly else sqlite3.connect(
                self.path, timeout=self.timeout_s, isolation_level=None, check_same_thread=False
            )  # fmt: skip
        except sqlite3.Error as e:
            raise ResultsError(f"cannot open results database {self.path}: {e}") from None
        self._pid = os.getpid()
        if self.readonly:
            return
        try:
            self._configure()
        except BaseException:
            self._conn.close()
            raise

    def _open_readonly(self) -> sqlite3.Connection:
        """A connection that never writes: ``mode=ro``; where SQLite cannot even make the WAL index beside a
        WAL database (a read-only folder or file system, so nobody can be writing it), ``immutable=1``."""
        base = f"file:{quote(str(self.path.resolve()))}"
        for flags in ("mode=ro", "immutable=1"):
            conn = sqlite3.connect(f"{base}?{flags}", uri=True, timeout=self.timeout_s, isolation_level=None,
                                   check_same_thread=False)  # fmt: skip
            try:
                conn.execute(f"PRAGMA busy_timeout = {int(self.timeout_s * 1000)}")
                conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
                return conn
            except sqlite3.OperationalError as e:
                conn.close()
                if flags == "immutable=1" or not any(w in str(e) for w in ("unable to open", "readonly")):
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _ensure_own_connection(self) -> None:
        """An SQLite connection must not cross a fork: a forked worker opens its own. The inherited one is kept
        (never used, never closed) because closing it in the child could disturb the parent's locks."""
        if os.getpid() != self._pid:
            self._inherited.append(self._conn)
            self._connect()

    def _not_a_database(self, e: sqlite3.Error) -> ResultsError:
        return ResultsError(
            f"{self.path} is not a readable results database: {e}",
            hint="the file is corrupt or truncated; restore it from a backup or use a new --db path",
        )

    def _configure(self) -> None:
        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                self._conn.execute(f"PRAGMA busy_timeout = {int(self.timeout_s * 1000)}")
                self._conn.execute("PRAGMA journal_mode = WAL").fetchone()
                self._conn.execute("PRAGMA synchronous = NORMAL")
                return
            except sqlite3.OperationalError as e:
                # Switching a brand-new file to WAL needs an exclusive lock; racing openers retry.
                if "locked" in str(e) and time.monotonic() <= deadline:
                    time.sleep(0.05)
                    continue
                if any(w in str(e) for w in ("full", "readonly", "unable to open", "I/O error")):
                    raise self._busy(e) from None  # the disk or the folder, not the file, is the problem
                raise self._not_a_database(e) from None
            except sqlite3.DatabaseError as e:
                raise self._not_a_database(e) from None

    def _tables(self) -> set[str]:
        rows = self._conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        return {r[0] for r in rows}

    def _check_schema(self) -> None:
        try:
            tables = self._tables()
            if not tables and not self.readonly:
                with self._write() as conn:
                    if not self._tables():  # another process may have created it while we waited
                        # executescript() would COMMIT our transaction; run the statements one by one.
                        for statement in _SCHEMA.split(";"):
                            if statement.strip():
                                conn.execute(statement)
                tables = self._tables()
            if "meta" not in tables or "runs" not in tables:
                raise ResultsError(
                    f"{self.path} is an SQLite database but not a restore results database "
                    f"(tables: {', '.join(sorted(tables)) or 'none'})",
                    hint="use another --db path; restore only writes to databases it created",
                )
            meta = dict(self._conn.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.DatabaseError as e:
            raise self._not_a_database(e) from None
        if meta.get("application") != APPLICATION:
            raise ResultsError(f"{self.path} has a 'meta' table but was not written by restore")
        try:
            version = int(meta.get("schema_version", ""))
        except ValueError:
            raise ResultsError(f"{self.path}: unreadable schema version {meta.get('schema_version')!r}") from None
        if version > SCHEMA_VERSION:
            raise ResultsError(
                f"{self.path} uses results schema version {version}; this restore reads up to version {SCHEMA_VERSION}",
                hint="upgrade restore (pip install -U restore) to read this database",
            )
        if version < SCHEMA_VERSION:  # pragma: no cover - no older schema exists yet
            raise ResultsError(f"{self.path} uses results schema version {version}, which has no migration")

    # -- transactions --------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; the write lock is taken up front so two writers never deadlock on upgrade."""
        with self._lock:
            self._ensure_own_connection()
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as e:
                raise self._busy(e) from None
            try:
                yield self._conn
                self._conn.execute("COMMIT")
            except sqlite3.Error as e:
                self._rollback()
                raise self._busy(e) from None
            except BaseException:
                self._rollback()
                raise

    def _rollback(self) -> None:
        with contextlib.suppress(sqlite3.Error):  # SQLite may have rolled back already (e.g. disk full)
            self._conn.execute("ROLLBACK")

    def _busy(self, e: sqlite3.Error) -> ResultsError:
        if "locked" in str(e) or "busy" in str(e):
            return ResultsError(
                f"results database {self.path} stayed locked for more than {self.timeout_s:.0f} s",
                hint="another process holds a long write; retry, or check for a hung writer",
            )
        return ResultsError(
            f"cannot write results database {self.path}: {e}",
            hint="check that the file and its folder are writable and the disk is not full",
        )

    def _read(self, sql: str, params: Iterable[Any] = ()) -> list[dict[str, Any]]:
        with self._lock:
            self._ensure_own_connection()
            try:
                cur = self._conn.execute(sql, tuple(params))
                names = [d[0] for d in cur.description]
                return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
            except sqlite3.OperationalError as e:
                raise self._busy(e) from None
            except sqlite3.DatabaseError as e:
                raise self._not_a_database(e) from None

    # -- rows <-> records ----------------------------------------------------------------------------------

    @staticmethod
    def _row_values(record: RunRecord) -> tuple[Any, ...]:
        values = []
        for name in _COLUMNS:
            value = getattr(record, name)
            values.append(canonical_json(value, name) if name in _JSON_COLUMNS else value)
        return tuple(values)

    @staticmethod
    def _record(row: Mapping[str, Any]) -> RunRecord:
        """A row as a record; a row edited by hand into something no writer produces is a ResultsError (a
        database may come from elsewhere: its contents are data to check, never trusted to be well-formed)."""
        data = dict(row)
        run = data.get("run_id")

        def bad(name: str, what: str) -> ResultsError:
            return ResultsError(
                f"run {run!r}: column {name!r} {what}", hint="the row was edited by hand; fix or delete it"
            )

        for name in _JSON_COLUMNS:
            try:
                data[name] = json.loads(data[name])
            except (TypeError, ValueError, RecursionError):
                raise bad(name, "does not hold valid JSON") from None
            if not isinstance(data[name], dict):
                raise bad(name, f"holds a JSON {type(data[name]).__name__}, not an object")
        if not isinstance(data.get("seed"), int):
            raise bad("seed", f"holds {data.get('seed')!r}, not an integer")
        if data.get("shots") is not None and not isinstance(data["shots"], int):
            raise bad("shots", f"holds {data['shots']!r}, not an integer")
        for name in ("method", "dataset", "protocol", "backbone", "tag"):
            if not isinstance(data.get(name), str):
                raise bad(name, f"holds {data.get(name)!r}, not text")
        return _checked_on_read(RunRecord.from_dict(data))

    def _find(self, conn: sqlite3.Connection, run_id: str) -> RunRecord | None:
        cur = conn.execute(f"SELECT {', '.join(_COLUMNS)} FROM runs WHERE run_id = ?", (run_id,))
        row = cur.fetchone()
        return None if row is None else self._record(dict(zip(_COLUMNS, row, strict=True)))

    def _fetch(self, conn: sqlite3.Connection, run_id: str) -> RunRecord:
        record = self._find(conn, run_id)
        if record is None:
            raise ResultsError(f"no run {run_id!r} in {self.path}", hint="`restore results runs` lists the runs")
        return record

    def _insert(self, conn: sqlite3.Connection, record: RunRecord, *, replace: bool) -> None:
        verb = "INSERT OR REPLACE" if replace else "INSERT"
        conn.execute(
            f"{verb} INTO runs ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})",
            self._row_values(record),
        )

    def _update(self, conn: sqlite3.Connection, record: RunRecord, columns: Iterable[str]) -> None:
        """One UPDATE statement for all changed columns: status and JSON land together or not at all."""
        cols = list(columns)
        values = [canonical_json(getattr(record, c), c) if c in _JSON_COLUMNS else getattr(record, c) for c in cols]
        conn.execute(
            f"UPDATE runs SET {', '.join(f'{c} = ?' for c in cols)} WHERE run_id = ?", (*values, record.run_id)
        )

    # -- writers -------------------------------------------------------------------------------------------

    def start_run(self, record: RunRecord) -> RunRecord:
        now = utc_now()
        record = dataclasses.replace(
            record, status="running", error=None, finished_at=None, heartbeat_at=now
        ).validated()
        with self._write() as conn:
            old = self._find(conn, record.run_id)
            if old is not None:
                if old.status == "finished":
                    raise ResultsError(
                        f"run {record.run_id!r} already finished; it cannot be started again",
                        hint="start a new run (a new run id) to repeat it",
                    )
                if old.config_hash != record.config_hash:
                    raise ResultsError(
                        f"run {record.run_id!r} exists with another config (hash {old.config_hash[:12]}, "
                        f"now {record.config_hash[:12]}); a resumed run must keep its config",
                        hint="resume with the run's own config, or start a new run",
                    )
                record = dataclasses.replace(record, started_at=old.started_at)
            self._insert(conn, record, replace=old is not None)
        return record

    def heartbeat(self, run_id: str) -> None:
        with self._write() as conn:
            conn.execute(
                "UPDATE runs SET heartbeat_at = ? WHERE run_id = ? AND status = 'running'", (utc_now(), run_id)
            )

    def _close_run(self, run_id: str, **changes: Any) -> RunRecord:
        with self._write() as conn:
            old = self._fetch(conn, run_id)
            if old.status not in ("running", "interrupted"):
                raise ResultsError(
                    f"run {run_id!r} is already {old.status}; only a running or interrupted run can become "
                    f"{changes['status']}"
                )
            new = dataclasses.replace(old, finished_at=utc_now(), **changes).validated()
            self._update(conn, new, ["status", "error", "metrics", "timings", "finished_at"])
        return new

    def finish_run(
        self, run_id: str, metrics: Mapping[str, Any], timings: Mapping[str, Any] | None = None
    ) -> RunRecord:
        return self._close_run(
            run_id, status="finished", error=None, metrics=dict(metrics), timings=dict(timings or {})
        )

    def fail_run(
        self,
        run_id: str,
        error: str,
        metrics: Mapping[str, Any] | None = None,
        timings: Mapping[str, Any] | None = None,
    ) -> RunRecord:
        return self._close_run(
            run_id,
            status="failed",
            error=str(error) or "failed",
            metrics=dict(metrics or {}),
            timings=dict(timings or {}),
        )

    def interrupt_run(self, run_id: str, reason: str = "interrupted") -> RunRecord:
        with self._write() as conn:
            old = self._fetch(conn, run_id)
            if old.status != "running":
                raise ResultsError(f"run {run_id!r} is {old.status}, not running; it cannot be interrupted")
            new = dataclasses.replace(old, status="interrupted", error=reason, finished_at=utc_now())
            self._update(conn, new, ["status", "error", "finished_at"])
        return new

    def add_run(self, record: RunRecord) -> RunRecord:
        record = record.validated()
        with self._write() as conn:
            try:
                self._insert(conn, record, replace=False)
            except sqlite3.IntegrityError:
                raise ResultsError(f"run {record.run_id!r} is already in {self.path}") from None
        return record

    def mark_interrupted(
        self, *, stale_after_s: float | None = None, run_ids: Iterable[str] | None = None
    ) -> list[str]:
        wanted = None if run_ids is None else set(run_ids)
        cutoff = None
        if stale_after_s is not None:
            cutoff = (datetime.now(UTC) - timedelta(seconds=stale_after_s)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        marked = []
        with self._write() as conn:
            rows = conn.execute(
                "SELECT run_id, host, pid, started_at, heartbeat_at FROM runs WHERE status = 'running'"
            ).fetchall()
            now = utc_now()
            for run_id, host, pid, started_at, heartbeat_at in rows:
                last = heartbeat_at or started_at
                if wanted is not None:
                    reason = "marked interrupted by hand" if run_id in wanted else None
                elif host == self._host and pid is not None and not _pid_alive(pid):
                    reason = f"process {pid} on {host} is gone"
                elif cutoff is not None and last < cutoff:
                    reason = f"no heartbeat since {last}"
                else:
                    reason = None
                if reason:
                    conn.execute(
                        "UPDATE runs SET status = 'interrupted', error = ?, finished_at = ? "
                        "WHERE run_id = ? AND status = 'running'",
                        (reason, now, run_id),
                    )
                    marked.append(run_id)
        return marked

    def set_tag(self, run_id: str, tag: str) -> RunRecord:
        """Name (or with '' un-name) a run's variant after the fact; reports group and label rows by it."""
        with self._write() as conn:
            new = dataclasses.replace(self._fetch(conn, run_id), tag=tag)
            self._update(conn, new, ["tag"])
        return new

    # -- readers -------------------------------------------------------------------------------------------

    def get(self, run_id: str) -> RunRecord:
        with self._lock:
            self._ensure_own_connection()
            try:
                return self._fetch(self._conn, run_id)
            except sqlite3.DatabaseError as e:
                raise self._not_a_database(e) from None

    def query(
        self,
        *,
        method: Filter = None,
        dataset: Filter = None,
        protocol: Filter = None,
        status: Filter = None,
        backbone: Filter = None,
        shots: Filter = None,
        seed: Filter = None,
        tag: Filter = None,
        config_hash: Filter = None,
    ) -> list[RunRecord]:
        filters = {
            "method": method,
            "dataset": dataset,
            "protocol": protocol,
            "status": status,
            "backbone": backbone,
            "shots": shots,
            "seed": seed,
            "tag": tag,
            "config_hash": config_hash,
        }
        where, params = [], []
        for column, value in filters.items():
            values = _as_list(value)
            if values is None:
                continue
            if not values:
                return []
            where.append(f"{column} IN ({', '.join('?' * len(values))})")
            params.extend(values)
        sql = f"SELECT {', '.join(_COLUMNS)} FROM runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY started_at, run_id"
        return [self._record(row) for row in self._read(sql, params)]

    def finished_hashes(self) -> set[str]:
        return {r["config_hash"] for r in self._read("SELECT DISTINCT config_hash FROM runs WHERE status = 'finished'")}

    def is_finished(self, config_hash: str) -> bool:
        return bool(
            self._read("SELECT 1 FROM runs WHERE config_hash = ? AND status = 'finished' LIMIT 1", (config_hash,))
        )

    def status_counts(self) -> dict[str, int]:
        return {r["status"]: r["n"] for r in self._read("SELECT status, COUNT(*) AS n FROM runs GROUP BY status")}

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> SQLiteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
