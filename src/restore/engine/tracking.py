"""Per-step training scalars (loss and its parts, shift_v/shift_t, alpha_v/alpha_t, lr, running accuracy)
written where researchers already look: TensorBoard event files and a JSONL file in the run folder, and W&B or
MLflow through their own libraries when the run asks for them (``tracking: [tensorboard, jsonl, wandb, mlflow]``).

The TensorBoard file is written here (TFRecord framing + the few protobuf fields of a scalar event) rather than
through ``torch.utils.tensorboard``: a run then needs no ``tensorboard`` package (only viewing does), and the
file can be cut back on a resume, which that writer cannot do.

Resume: the trainer calls ``begin(step)`` with the checkpoint's global step; the JSONL and event files drop
what a killed process logged past it, so a resumed run holds every step exactly once. W&B and MLflow cannot
delete points: a step they got after the last checkpoint is sent again by the resume (with the same value, as
a resume reproduces the uninterrupted run exactly); W&B ignores it, MLflow keeps both.

Closing while an exception propagates (the trainer's error, Ctrl-C) marks the W&B / MLflow run failed or
killed rather than finished.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import os
import secrets
import socket
import struct
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

from restore import distributed
from restore.errors import ConfigError
from restore.fileio import atomic_write, atomic_write_json
from restore.options import flatten

TRACKERS = ("tensorboard", "jsonl", "wandb", "mlflow")
SCALARS_FILE = "scalars.jsonl"
TENSORBOARD_DIR = "tensorboard"
IDS_FILE = "tracking.json"  # the W&B / MLflow run ids, so that a resume continues the same external run
PACKAGES = {"wandb": "wandb", "mlflow": "mlflow"}  # tracker -> the pip package it needs


class Tracker(Protocol):
    """Where the trainer's per-step scalars go."""

    def begin(self, step: int) -> None:
        """Training continues after global step ``step`` (0: from the start); later steps are dropped."""

    def log(self, step: int, scalars: Mapping[str, float]) -> None:
        """The scalars of global step ``step`` (1-based)."""

    def flush(self) -> None:
        """Store what was logged (called before each checkpoint, so a resume loses no step)."""

    def summary(self, step: int, values: Mapping[str, float]) -> None:
        """The run's final test metrics after its last step ``step`` (`final_metrics`). The files keep them in
        ``metrics.json`` already; W&B and MLflow put them where their users look for a run's result."""

    def close(self) -> None: ...


def final_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """A run's result as flat scalars: ``test/<split>_top1`` and ``_top5`` for each evaluated split (base, novel,
    a target dataset, ...), and ``test/hm`` for base-to-novel."""
    out: dict[str, float] = {}
    for label, value in metrics.items():
        if isinstance(value, Mapping) and "top1" in value:
            out[f"test/{label}_top1"] = float(value["top1"])
            if value.get("top5") is not None:
                out[f"test/{label}_top5"] = float(value["top5"])
    if isinstance(metrics.get("hm"), int | float):
        out["test/hm"] = float(metrics["hm"])
    return out


# --- choosing -------------------------------------------------------------------------------------------
def check_trackers(names: list[str]) -> None:
    """Refuse, before a run writes anything, a tracker whose library is not installed."""
    for name in names:
        package = PACKAGES.get(name)
        # (a bare folder of that name, e.g. the ./wandb that W&B leaves, is a namespace package: no origin)
        if package is not None and getattr(importlib.util.find_spec(name), "origin", None) is None:
            others = [n for n in names if n != name]
            raise ConfigError(
                f"tracking: {name} needs the {package} package, which is not installed",
                hint=f"pip install {package}, or leave it out: --set tracking=[{','.join(others)}]",
            )


def open_trackers(names: list[str], run_dir: Path, *, name: str = "", config: dict[str, Any] | None = None) -> Tracker:
    """The trackers ``names`` of the run in ``run_dir`` as one; under torchrun only rank 0 writes."""
    if not distributed.is_main():
        return Trackers([])
    check_trackers(names)
    config = config or {}
    made: list[Tracker] = []
    for tracker in dict.fromkeys(names):  # each once, in the order given
        if tracker == "jsonl":
            made.append(JsonlTracker(run_dir / SCALARS_FILE))
        elif tracker == "tensorboard":
            made.append(TensorBoardTracker(run_dir / TENSORBOARD_DIR))
        elif tracker == "wandb":
            made.append(WandbTracker(run_dir, name=name, config=config))
        elif tracker == "mlflow":
            made.append(MlflowTracker(run_dir, name=name, config=config))
        else:
            raise ConfigError(f"tracking: unknown tracker {tracker!r}", hint=f"choose from {', '.join(TRACKERS)}")
    return Trackers(made)


class Trackers:
    """Several trackers as one (none: a run that tracks nothing, or a rank other than 0)."""

    def __init__(self, trackers: list[Tracker]) -> None:
        self.trackers = trackers

    def begin(self, step: int) -> None:
        for t in self.trackers:
            t.begin(step)

    def log(self, step: int, scalars: Mapping[str, float]) -> None:
        for t in self.trackers:
            t.log(step, scalars)

    def flush(self) -> None:
        for t in self.trackers:
            t.flush()

    def summary(self, step: int, values: Mapping[str, float]) -> None:
        for t in self.trackers:
            t.summary(step, values)

    def close(self) -> None:
        for t in self.trackers:
            t.close()


def _write_or_give_up(tracker: Any, data: str | bytes) -> None:
    """Write and flush ``data`` to ``tracker._file``; on a full disk say so once and go on without that file,
    as the run's log does: the scalars are the run's diary, not its result (the next checkpoint save stops
    the run with a clear error if the disk stays full)."""
    if tracker._file is None:
        return
    try:
        tracker._file.write(data)
        tracker._file.flush()
    except OSError as e:
        with contextlib.suppress(OSError):
            tracker._file.close()
        tracker._file = None
        print(f"warning: tracking stopped writing {tracker.path}: {e.strerror or e}", file=sys.stderr)


class _FileTracker:
    """What the run-folder files share: each write is flushed as made (a kill never loses a step that a
    checkpoint holds), and the result is left to metrics.json beside them."""

    def __init__(self, path: Path) -> None:
        self.path = path  # named in the warning of a full disk
        self._file: Any = None
        self._begun = False

    def flush(self) -> None:
        pass  # every write is flushed as made

    def summary(self, step: int, values: Mapping[str, float]) -> None:
        pass  # metrics.json beside these files holds the result

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


# --- JSONL ----------------------------------------------------------------------------------------------
class JsonlTracker(_FileTracker):
    """One line per step: ``{"step": 7, "time": <unix seconds>, "loss": ..., "ce": ..., "lr": ..., ...}``."""

    def begin(self, step: int) -> None:
        self._begun = True
        kept = [line for line in read_jsonl_lines(self.path) if json.loads(line)["step"] <= step]
        if self.path.exists():
            atomic_write(self.path, lambda f: f.write("".join(line + "\n" for line in kept).encode()))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a", encoding="utf-8")

    def log(self, step: int, scalars: Mapping[str, float]) -> None:
        if not self._begun:
            self.begin(0)
        _write_or_give_up(self, json.dumps({"step": step, "time": round(time.time(), 3), **scalars}) + "\n")


def read_jsonl_lines(path: Path) -> list[str]:
    """The complete lines of a scalars file (a line cut short by a kill is left out)."""
    if not path.exists():
        return []
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            json.loads(line)
        except json.JSONDecodeError:
            continue
        lines.append(line)
    return lines


def read_scalars(run_dir: str | Path) -> list[dict[str, Any]]:
    """The per-step records of a run folder's scalars.jsonl."""
    return [json.loads(line) for line in read_jsonl_lines(Path(run_dir) / SCALARS_FILE)]


# --- TensorBoard ----------------------------------------------------------------------------------------
class TensorBoardTracker(_FileTracker):
    """Scalars as TensorBoard events under ``<run>/tensorboard/`` (tags ``train/<name>``); one event file per
    run, cut back and continued on a resume. `tensorboard --logdir runs/` shows every run."""

    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        self.folder = folder

    def begin(self, step: int) -> None:
        self._begun = True
        self.folder.mkdir(parents=True, exist_ok=True)
        existing = sorted(self.folder.glob("events.out.tfevents.*"))
        if existing:
            path = existing[0]
            kept = [r for r in read_records(path) if _event_step(r) <= step]
            atomic_write(path, lambda f: f.write(b"".join(tf_record(r) for r in kept)))
            for extra in existing[1:]:
                extra.unlink()
            self._file = path.open("ab")
        else:
            path = self.folder / f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}"
            self._file = path.open("ab")
            self._write(_event(time.time(), 0, file_version="brain.Event:2"))

    def log(self, step: int, scalars: Mapping[str, float]) -> None:
        if not self._begun:
            self.begin(0)
        values = b"".join(_field(1, _scalar_value(f"train/{k}", float(v))) for k, v in scalars.items())
        self._write(_event(time.time(), step, summary=values))

    def _write(self, event: bytes) -> None:
        _write_or_give_up(self, tf_record(event))


def _crc32c_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), the checksum of TFRecord framing."""
    crc = 0xFFFFFFFF
    for b in data:
        crc = _CRC_TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc(data: bytes) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def tf_record(data: bytes) -> bytes:
    """A TFRecord: length, its masked CRC, the data, its masked CRC (little-endian)."""
    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", masked_crc(length)) + data + struct.pack("<I", masked_crc(data))


def read_records(path: Path) -> list[bytes]:
    """The intact records of a TFRecord file; reading stops at a record a kill cut short or damaged."""
    blob, records, at = path.read_bytes(), [], 0
    while at + 12 <= len(blob):
        header = blob[at : at + 8]
        (length,) = struct.unpack("<Q", header)
        (crc,) = struct.unpack("<I", blob[at + 8 : at + 12])
        end = at + 12 + length
        if crc != masked_crc(header) or end + 4 > len(blob):
            break
        data = blob[at + 12 : end]
        if struct.unpack("<I", blob[end : end + 4])[0] != masked_crc(data):
            break
        records.append(data)
        at = end + 4
    return records


# Protobuf wire format, only what an Event with scalar summaries uses: Event {1: wall_time double, 2: step
# int64, 3: file_version string, 5: summary}, Summary {1: repeated Value}, Value {1: tag string, 2: float}.
def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (string, bytes, message)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _scalar_value(tag: str, value: float) -> bytes:
    return _field(1, tag.encode()) + _varint(2 << 3 | 5) + struct.pack("<f", value)


def _event(wall_time: float, step: int, *, file_version: str = "", summary: bytes = b"") -> bytes:
    out = _varint(1 << 3 | 1) + struct.pack("<d", wall_time) + _varint(2 << 3 | 0) + _varint(step)
    if file_version:
        out += _field(3, file_version.encode())
    if summary:
        out += _field(5, summary)
    return out


def _fields(data: bytes) -> Iterator[tuple[int, int | bytes]]:
    """(field number, value) of a protobuf message: ints for varints, bytes otherwise."""
    at = 0
    while at < len(data):
        key, at = _read_varint(data, at)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, at = _read_varint(data, at)
            yield number, value
        elif wire == 1:
            yield number, data[at : at + 8]
            at += 8
        elif wire == 5:
            yield number, data[at : at + 4]
            at += 4
        elif wire == 2:
            length, at = _read_varint(data, at)
            yield number, data[at : at + length]
            at += length
        else:
            return


def _read_varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, at


def _event_step(record: bytes) -> int:
    return next((int(v) for n, v in _fields(record) if n == 2), 0)  # type: ignore[arg-type]


# --- W&B and MLflow, through their own libraries ---------------------------------------------------------
def _ids(run_dir: Path) -> dict[str, str]:
    try:
        return json.loads((run_dir / IDS_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _save_id(run_dir: Path, key: str, value: str) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run_dir / IDS_FILE, {**_ids(run_dir), key: value})


def _ending() -> str:
    """How the run ends, in MLflow's words: called from a ``finally``, an exception in flight means it failed."""
    error = sys.exc_info()[1]
    if error is None:
        return "FINISHED"
    return "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED"


class WandbTracker:
    """A W&B run (``WANDB_PROJECT``, default ``restore``; ``WANDB_MODE=offline`` works) holding the run's config;
    its files go under the run folder. A resume continues the same W&B run."""

    def __init__(self, run_dir: Path, *, name: str, config: dict[str, Any]) -> None:
        self.run_dir, self.name, self.config = run_dir, name, config
        self.run: Any = None

    def begin(self, step: int) -> None:
        wandb = importlib.import_module("wandb")
        run_id = _ids(self.run_dir).get("wandb") or secrets.token_hex(8)
        _save_id(self.run_dir, "wandb", run_id)
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "restore"),
            id=run_id,
            name=self.name or None,
            resume="allow",
            dir=str(self.run_dir),
            config=self.config,
            reinit="create_new",
        )

    def log(self, step: int, scalars: Mapping[str, float]) -> None:
        if self.run is None:
            self.begin(0)
        if step < (getattr(self.run, "step", 0) or 0):
            return  # a resumed online run already has this step (W&B would warn on every one)
        self.run.log({f"train/{k}": v for k, v in scalars.items()}, step=step)

    def flush(self) -> None:
        pass  # W&B's own process stores what was logged

    def summary(self, step: int, values: Mapping[str, float]) -> None:
        if self.run is None:
            self.begin(step)  # the training's W&B run, resumed: the result goes on the same run
        self.run.summary.update(dict(values))

    def close(self) -> None:
        if self.run is not None:
            self.run.finish(exit_code=0 if _ending() == "FINISHED" else 1)
            self.run = None


class MlflowTracker:
    """An MLflow run (``MLFLOW_TRACKING_URI``; experiment ``MLFLOW_EXPERIMENT_NAME``, default ``restore``) with
    the run's config as dotted params. Uses a client, not the fluent API, so a caller's active run is untouched.
    Points are sent in batches (every few seconds, and at each checkpoint): one request per step would slow a
    fast run against a remote server."""

    every_s = 5.0

    def __init__(self, run_dir: Path, *, name: str, config: dict[str, Any]) -> None:
        self.run_dir, self.name, self.config = run_dir, name, config
        self.client: Any = None
        self.run_id = ""
        self._pending: list[Any] = []
        self._sent = time.monotonic()

    def begin(self, step: int) -> None:
        mlflow = importlib.import_module("mlflow")
        from mlflow.entities import Param  # optional: mlflow

        self.client = mlflow.tracking.MlflowClient()
        self.run_id = _ids(self.run_dir).get("mlflow", "")
        if not self.run_id:
            experiment = os.environ.get("MLFLOW_EXPERIMENT_NAME", "restore")
            found = self.client.get_experiment_by_name(experiment)
            experiment_id = found.experiment_id if found is not None else self.client.create_experiment(experiment)
            self.run_id = self.client.create_run(experiment_id, run_name=self.name or None).info.run_id
            _save_id(self.run_dir, "mlflow", self.run_id)
            params = [Param(k, str(v)[:500]) for k, v in flatten(self.config).items()]
            for i in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
                self.client.log_batch(self.run_id, params=params[i : i + 100])
        else:
            self.client.update_run(self.run_id, status="RUNNING")

    def log(self, step: int, scalars: Mapping[str, float]) -> None:
        from mlflow.entities import Metric  # optional: mlflow

        if self.client is None:
            self.begin(0)
        now = int(time.time() * 1000)
        self._pending.extend(Metric(f"train/{k}", float(v), now, step) for k, v in scalars.items())
        if time.monotonic() - self._sent > self.every_s:
            self.flush()

    def summary(self, step: int, values: Mapping[str, float]) -> None:
        from mlflow.entities import Metric  # optional: mlflow

        if self.client is None:
            self.begin(step)  # the training's MLflow run, continued: the result goes on the same run
        now = int(time.time() * 1000)
        self._pending.extend(Metric(k, float(v), now, step) for k, v in values.items())
        self.flush()

    def flush(self) -> None:
        for i in range(0, len(self._pending), 1000):  # MLflow takes at most 1000 metrics per batch
            self.client.log_batch(self.run_id, metrics=self._pending[i : i + 1000])
        self._pending, self._sent = [], time.monotonic()

    def close(self) -> None:
        if self.client is not None:
            self.flush()
            self.client.set_terminated(self.run_id, status=_ending())
            self.client = None
