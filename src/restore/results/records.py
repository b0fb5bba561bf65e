"""The run record: one row of the results database, and the checks that keep its JSON columns meaningful.

Writers (trainer, `restore run`, sweeps) build a `RunRecord` with `RunRecord.new(...)`; the store validates it
before anything touches the database, so a malformed metrics dict is refused with a clear message instead of
becoming a row the report later misreads.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
import re
import secrets
import socket
import subprocess
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from restore import __version__
from restore.errors import ResultsError

PROTOCOLS = ("b2n", "xd", "dg", "fewshot", "train")
STATUSES = ("running", "finished", "failed", "interrupted")
#: Top-level metric keys that are not evaluated splits.
RESERVED_METRIC_KEYS = ("hm", "shift", "skipped_images", "extra")
#: A written HM may differ from 2BN/(B+N) by rounding only (percentage points).
HM_TOLERANCE = 0.01


def utc_now() -> str:
    """ISO 8601 UTC with microseconds: sorts as text, so SQL can compare timestamps as strings."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def harmonic_mean(base: float, novel: float) -> float:
    """HM = 2BN/(B+N), the base-to-novel summary; 0 when both are 0."""
    return 0.0 if base + novel == 0 else 2.0 * base * novel / (base + novel)


def canonical_json(value: Any, what: str = "value") -> str:
    """Compact, key-sorted JSON without NaN/Infinity (which are not JSON and would not read back)."""

    def default(obj: Any) -> Any:
        if isinstance(obj, Path):
            return str(obj)
        if isinstance(obj, (set, frozenset)):
            return sorted(obj)
        if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalars
            return obj.item()
        raise TypeError(f"{type(obj).__name__} is not JSON serialisable")

    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False, default=default)
    except (TypeError, ValueError) as e:
        raise ResultsError(
            f"the run's {what} cannot be stored as JSON: {e}",
            hint="use plain numbers, strings, lists and dicts; NaN and infinity are not allowed",
        ) from None


def _drop_dotted(config: Mapping[str, Any], key: str) -> dict[str, Any]:
    head, _, rest = key.partition(".")
    out = dict(config)
    if head in out:
        if rest and isinstance(out[head], Mapping):
            out[head] = _drop_dotted(out[head], rest)
        elif not rest:
            del out[head]
    return out


def config_hash(config: Mapping[str, Any], ignore: Iterable[str] = ()) -> str:
    """SHA-256 of the resolved config's canonical JSON; `ignore` drops dotted keys (output paths, device).

    A sweep skips a cell whose hash already has a finished row, so two configs hash equal exactly when
    their canonical JSON is equal: key order and tuple-vs-list do not matter, values do.
    """
    for key in ignore:
        config = _drop_dotted(config, key)
    return hashlib.sha256(canonical_json(config, "config").encode()).hexdigest()


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """Package version, plus `+g<commit>` (and `.dirty`) when the code runs from a git checkout."""
    repo = Path(__file__).resolve().parents[3]
    if not (repo / ".git").exists():
        return __version__

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()

    try:
        commit = git("rev-parse", "--short=12", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return __version__
    return f"{__version__}+g{commit}{'.dirty' if dirty else ''}"


def new_run_id(method: str, dataset: str, protocol: str, seed: int) -> str:
    """Readable and unique: `20250101T120000-coop-dtd-b2n-s1-3fa9c2` (safe as a folder name)."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    parts = [stamp, method, dataset, protocol, f"s{seed}", secrets.token_hex(3)]
    return "-".join(re.sub(r"[^A-Za-z0-9_.]+", "_", p) for p in parts)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def validate_metrics(metrics: Mapping[str, Any], protocol: str, *, complete: bool) -> dict[str, Any]:
    """Check the metrics layout; return a copy with `hm` filled in for base-to-novel.

    Every top-level key but the reserved ones is an evaluated split `{"top1": %, "top5": %, "n": count}`
    (top1 required, percentages in [0, 100]). `complete` (a finished run) also requires the splits the
    protocol needs: base and novel for b2n, at least one split otherwise.
    """
    if not isinstance(metrics, Mapping):
        raise ResultsError(f"metrics must be a dict of splits, got {type(metrics).__name__}")
    out = dict(metrics)
    where = "metrics"
    for key, value in out.items():
        if not isinstance(key, str):
            raise ResultsError(f"{where}: key {key!r} is not a string")
        if key == "hm":
            if not _is_number(value):
                raise ResultsError(f"{where}['hm'] must be a finite number, got {value!r}")
        elif key == "skipped_images":
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ResultsError(f"{where}['skipped_images'] must be a count >= 0, got {value!r}")
        elif key == "shift":
            _validate_shift(value)
        elif key == "extra":
            pass
        else:
            _validate_split(key, value)
    splits = [k for k in out if k not in RESERVED_METRIC_KEYS]
    if protocol == "b2n":
        missing = [s for s in ("base", "novel") if s not in out]
        if complete and missing:
            raise ResultsError(
                f"a finished base-to-novel run needs metrics for 'base' and 'novel'; missing {missing}",
                hint="evaluate both splits before finishing the run, or record it as failed",
            )
        if not missing:
            hm = harmonic_mean(out["base"]["top1"], out["novel"]["top1"])
            if "hm" in out and abs(out["hm"] - hm) > HM_TOLERANCE:
                raise ResultsError(
                    f"metrics['hm'] = {out['hm']} does not match 2BN/(B+N) = {hm:.4f} of the base and novel top1",
                    hint="leave 'hm' out and it is computed from base and novel",
                )
            out["hm"] = out.get("hm", hm)
    elif complete and not splits:
        raise ResultsError(
            "a finished run needs at least one evaluated split in its metrics, e.g. {'test': {'top1': 71.3}}"
        )
    return out


def _validate_split(key: str, value: Any) -> None:
    if not isinstance(value, Mapping) or "top1" not in value:
        raise ResultsError(
            f"metrics[{key!r}] must be a split's results like {{'top1': 81.2, 'top5': 95.0, 'n': 1234}}, got {value!r}",
            hint=f"top-level keys other than splits are limited to {list(RESERVED_METRIC_KEYS)}; "
            "put anything else under 'extra'",
        )
    for acc in ("top1", "top5"):
        if acc in value and not (_is_number(value[acc]) and 0.0 <= value[acc] <= 100.0):
            raise ResultsError(
                f"metrics[{key!r}][{acc!r}] = {value[acc]!r} is not a percentage in [0, 100]",
                hint="accuracies are stored as percentages (81.2, not 0.812)",
            )
    n = value.get("n")
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 0):
        raise ResultsError(f"metrics[{key!r}]['n'] must be a count >= 0, got {n!r}")


def _validate_shift(value: Any) -> None:
    if not isinstance(value, Mapping):
        raise ResultsError(f"metrics['shift'] must be a dict with 'vision' and/or 'text' lists, got {value!r}")
    for tower in ("vision", "text"):
        curve = value.get(tower)
        if curve is None:
            continue
        if not isinstance(curve, (list, tuple)) or not all(_is_number(x) for x in curve):
            raise ResultsError(f"metrics['shift'][{tower!r}] must be a list of finite numbers (one per layer)")
    if "discrepancy" in value and not _is_number(value["discrepancy"]):
        raise ResultsError("metrics['shift']['discrepancy'] must be a finite number")


@dataclasses.dataclass(frozen=True)
class RunRecord:
    """One run: what was trained (method, dataset, protocol, config), where, and what came out."""

    run_id: str
    method: str
    dataset: str
    protocol: str
    seed: int
    backbone: str
    config_hash: str
    config: dict[str, Any]
    code_version: str
    status: str = "running"
    shots: int | None = None
    tag: str = ""
    error: str | None = None
    metrics: dict[str, Any] = dataclasses.field(default_factory=dict)
    timings: dict[str, Any] = dataclasses.field(default_factory=dict)
    run_dir: str | None = None
    host: str = dataclasses.field(default_factory=socket.gethostname)
    pid: int | None = dataclasses.field(default_factory=os.getpid)
    started_at: str = dataclasses.field(default_factory=utc_now)
    heartbeat_at: str | None = None
    finished_at: str | None = None

    @classmethod
    def new(
        cls,
        *,
        method: str,
        dataset: str,
        protocol: str,
        seed: int,
        backbone: str,
        config: Mapping[str, Any],
        shots: int | None = None,
        tag: str = "",
        run_dir: str | Path | None = None,
        run_id: str | None = None,
        hash_ignore: Iterable[str] = (),
    ) -> RunRecord:
        """A `running` record for this process, with id, config hash, code version and host filled in.

        `tag` names a variant of a method (an ablation, a different lr) so reports keep it apart.
        """
        return cls(
            run_id=run_id or new_run_id(method, dataset, protocol, seed),
            method=method,
            dataset=dataset,
            protocol=protocol,
            seed=seed,
            backbone=backbone,
            shots=shots,
            tag=tag,
            config_hash=config_hash(config, hash_ignore),
            config=json.loads(canonical_json(dict(config), "config")),
            code_version=code_version(),
            run_dir=None if run_dir is None else str(run_dir),
        )

    @property
    def schedule(self) -> str:
        """The schedule set the run ran (`restore.methods.schedules`); '' for a record from before the sets."""
        value = self.config.get("schedule") if isinstance(self.config, Mapping) else None
        return value if isinstance(value, str) else ""

    @property
    def label(self) -> str:
        """How reports name the row: the method, its schedule set in parentheses (two sets are two rows,
        never averaged together), and its tag in brackets when it has one."""
        name = f"{self.method} ({self.schedule})" if self.schedule else self.method
        return f"{name} [{self.tag}]" if self.tag else name

    def validated(self) -> RunRecord:
        """This record with its fields checked (and `hm` filled in); raises ResultsError on the first problem."""
        for name in ("run_id", "method", "dataset", "backbone", "config_hash", "code_version", "host"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ResultsError(f"run record field {name!r} must be a non-empty string, got {value!r}")
        if self.protocol not in PROTOCOLS:
            raise ResultsError(f"unknown protocol {self.protocol!r}", hint=f"valid protocols: {', '.join(PROTOCOLS)}")
        if self.status not in STATUSES:
            raise ResultsError(f"unknown status {self.status!r}", hint=f"valid statuses: {', '.join(STATUSES)}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ResultsError(f"run record field 'seed' must be an integer, got {self.seed!r}")
        if self.shots is not None and (
            not isinstance(self.shots, int) or isinstance(self.shots, bool) or self.shots < 0
        ):
            raise ResultsError(f"run record field 'shots' must be a count >= 0 or None, got {self.shots!r}")
        if self.protocol == "fewshot" and self.shots is None:
            raise ResultsError("a few-shot run needs 'shots'", hint="set shots to 1, 2, 4, 8 or 16")
        if not isinstance(self.tag, str):
            raise ResultsError(f"run record field 'tag' must be a string, got {self.tag!r}")
        if not isinstance(self.timings, Mapping):
            raise ResultsError(f"timings must be a dict, got {type(self.timings).__name__}")
        metrics = validate_metrics(self.metrics, self.protocol, complete=self.status == "finished")
        if self.status == "failed" and not self.error:
            raise ResultsError("a failed run needs an error message")
        return dataclasses.replace(self, metrics=metrics)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunRecord:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})
