"""Which runs are one configuration, and how a report row names it.

A report row must be one configuration: runs that differ in anything but the seed (an lr, the epochs, a method
option) are different rows, never `±` of one another. A run's *signature* is what its stored config changes
from the method's defaults for its protocol, dataset, shots and schedule set (the config `restore run` would
build with no options); two runs share a row exactly when method, schedule set, tag and signature agree.

The row label shows the changes (`coop (own) [optim.lr=0.01]`) or the user's tag (`coop (own) [lr-sweep]`).
Settings whose default depends on the machine (precision under `auto`, loader workers, the backbone's image
size) are part of the signature but named in the label only when two rows would otherwise read the same.
A dataset run on a class subset (`data.classes=present`) is its own column, labelled `dtd (10/47 classes)`.
"""

from __future__ import annotations

import functools
import json
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from restore.options import flatten
from restore.results.records import RunRecord

#: Keys that are the table's own dimensions (columns, sections, the seed averaged over) or the row's name.
DESCRIPTIVE_KEYS = frozenset(
    {
        "seed", "tag", "schedule", "protocol", "method", "method.name", "data.dataset", "data.shots",
        "data.classes", "model.backbone", "dataset", "backbone", "shots",
    }
)  # fmt: skip
#: Keys whose default depends on the machine or the backbone: named only when they tell two rows apart.
SOFT_KEYS = frozenset({"model.precision", "data.workers", "data.image_size"})

Item = tuple[str, str]  # (dotted key, canonical JSON value)


def _value(v: Any) -> str:
    return json.dumps(v, sort_keys=True, separators=(",", ":"))


@functools.lru_cache(maxsize=256)
def _defaults(method: str, protocol: str, schedule: str, dataset: str, shots: int, backbone: str) -> dict | None:
    """The resolved identity `restore run` builds with no options, flattened; None when it cannot be built
    (a method or dataset this install does not know, a config from an older schema)."""
    from restore.engine.run_config import build_run_config, resolve  # slow: torch; `restore report` loads this module

    data: dict[str, Any] = {"method": method, "protocol": protocol, "data": {"dataset": dataset, "shots": shots}}
    if schedule:
        data["schedule"] = schedule
    if backbone:
        data["model"] = {"backbone": backbone}
    try:
        return flatten(resolve(build_run_config(data)).identity())
    except Exception:  # any failure only means: no defaults to compare with
        return None


def _defaults_for(config: Mapping[str, Any]) -> dict | None:
    method = config.get("method")
    name = method.get("name") if isinstance(method, Mapping) else None
    data = config.get("data") if isinstance(config.get("data"), Mapping) else {}
    model = config.get("model") if isinstance(config.get("model"), Mapping) else {}
    if not isinstance(name, str):
        return None
    shots = data.get("shots", 16)
    return _defaults(
        name,
        str(config.get("protocol", "train")),
        str(config.get("schedule") or ""),
        str(data.get("dataset") or ""),
        shots if isinstance(shots, int) else 16,
        str(model.get("backbone") or ""),
    )


def signature(record: RunRecord) -> tuple[frozenset[Item], tuple[Item, ...]]:
    """(all changes from the defaults, the ones a label names). Without defaults every setting is a change,
    none named: rows then split on any difference and the label names only what tells them apart."""
    config = record.config if isinstance(record.config, Mapping) else {}
    flat = {k: v for k, v in flatten(config).items() if k not in DESCRIPTIVE_KEYS}
    defaults = _defaults_for(config)
    if defaults is None:
        return frozenset((k, _value(v)) for k, v in flat.items()), ()
    changed = {k: v for k, v in flat.items() if k not in defaults or _value(defaults[k]) != _value(v)}
    items = frozenset((k, _value(v)) for k, v in changed.items())
    shown = tuple(sorted((k, _value(v)) for k, v in changed.items() if k not in SOFT_KEYS))
    return items, shown


def _base_label(record: RunRecord) -> str:
    return f"{record.method} ({record.schedule})" if record.schedule else record.method


def _fmt(items: Iterable[Item]) -> str:
    return ", ".join(f"{k}={v.strip(chr(34))}" for k, v in items)


def row_key(record: RunRecord) -> tuple:
    """Runs with equal keys are seeds of one configuration."""
    return (record.method, record.schedule, record.tag, signature(record)[0])


def row_labels(records: Sequence[RunRecord]) -> dict[str, str]:
    """run_id → row label, unique per configuration among `records` (so within any table built from them)."""
    by_key: dict[tuple, RunRecord] = {}
    for r in records:
        by_key.setdefault(row_key(r), r)
    first: dict[tuple, str] = {}
    shown: dict[tuple, tuple[Item, ...]] = {}
    for key, r in by_key.items():
        items = () if r.tag else signature(r)[1]
        shown[key] = items
        if r.tag:
            first[key] = f"{_base_label(r)} [{r.tag}]"
        else:
            first[key] = _base_label(r) + (f" [{_fmt(items)}]" if items else "")
    clashes: dict[str, list[tuple]] = defaultdict(list)
    for key, label in first.items():
        clashes[label].append(key)
    final = dict(first)
    for label, keys in clashes.items():
        if len(keys) < 2:
            continue
        sigs = {k: dict(k[3]) for k in keys}
        differing = sorted({name for s in sigs.values() for name in s if len({t.get(name) for t in sigs.values()}) > 1})
        for k in keys:
            named = {n for n, _ in shown[k]}
            extra = [(n, sigs[k].get(n, '"default"')) for n in differing if n not in named]
            items = _fmt(extra)
            if label.endswith("]"):
                final[k] = f"{label[:-1]}; {items}]"
            else:
                final[k] = f"{label} [{items}]"
    return {r.run_id: final[row_key(r)] for r in records}


_KEPT = re.compile(r"kept (\d+) of (\d+) classes")


def class_subset_note(notes: Iterable[str]) -> dict[str, int] | None:
    """`{"kept": 10, "of": 47}` from a loader note "classes='present': kept 10 of 47 classes…", else None."""
    for note in notes:
        m = _KEPT.search(note)
        if m:
            return {"kept": int(m.group(1)), "of": int(m.group(2))}
    return None


def dataset_label(record: RunRecord) -> str:
    """The dataset as a column names it: `dtd`, or `dtd (10/47 classes)` for a run on a class subset."""
    config = record.config if isinstance(record.config, Mapping) else {}
    data = config.get("data") if isinstance(config.get("data"), Mapping) else {}
    mode = data.get("classes", "all")
    if mode in (None, "all"):
        return record.dataset
    extra = record.metrics.get("extra") if isinstance(record.metrics, Mapping) else None
    classes = extra.get("classes") if isinstance(extra, Mapping) else None
    if isinstance(classes, Mapping) and classes.get("subset") is False:
        return record.dataset  # present mode, and every class was on disk
    if isinstance(classes, Mapping) and isinstance(classes.get("kept"), int):
        if isinstance(classes.get("of"), int):
            return f"{record.dataset} ({classes['kept']}/{classes['of']} classes)"
        return f"{record.dataset} ({classes['kept']} classes, subset)"
    return f"{record.dataset} (classes={mode})"
