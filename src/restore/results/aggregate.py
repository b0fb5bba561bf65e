"""Mean ± std over seeds per method × dataset, and the protocol tables built from them.

Conventions (the literature's, stated in every report's footnotes):
- std is the sample standard deviation over seeds (n − 1); one seed has no std.
- Base-to-novel HM is the harmonic mean of the mean Base and mean Novel accuracies, not the mean of per-seed
  HMs; the Average over datasets is the mean of per-dataset means, and its HM is HM(average Base, average Novel).
- Cross-dataset / domain generalisation: a run's metrics hold one split per target dataset; the split named
  like the run's own (source) dataset is shown but left out of the average over targets.
- A row is one configuration (`grouping`): runs that differ in any setting but the seed are separate rows,
  labelled by what they change from the method's defaults or by their tag; a class-subset run is its own column.
- Only `finished` runs count. Only an exact repeat (same configuration and seed) replaces an earlier run: the
  latest counts and a note names the runs it replaced.
"""

from __future__ import annotations

import math
import re
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from restore.results.grouping import dataset_label, row_key, row_labels
from restore.results.records import RESERVED_METRIC_KEYS, RunRecord, harmonic_mean

# Literature order of datasets and methods; anything unknown follows alphabetically.
_DATASET_ORDER = [
    ("imagenet",),
    ("caltech101", "caltech"),
    ("oxfordpets", "pets"),
    ("stanfordcars", "cars"),
    ("flowers102", "oxfordflowers", "flowers"),
    ("food101", "food"),
    ("fgvcaircraft", "aircraft"),
    ("sun397", "sun"),
    ("dtd", "describabletextures"),
    ("eurosat",),
    ("ucf101", "ucf"),
    ("imagenetv2",),
    ("imagenetsketch",),
    ("imageneta",),
    ("imagenetr",),
]
_METHOD_ORDER = ["zeroshot", "zeroshot_clip", "coop", "cocoop", "kgcoop", "vpt", "ivlp", "maple", "promptsrc"]


def norm_name(name: str) -> str:
    """Compare dataset names loosely: `Oxford_Pets`, `oxford-pets` and `oxfordpets` are one dataset."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


def dataset_sort_key(name: str) -> tuple[int, str]:
    n = norm_name(name.split(" (", 1)[0])
    for i, aliases in enumerate(_DATASET_ORDER):
        if n in aliases:
            return (i, norm_name(name))
    return (len(_DATASET_ORDER), norm_name(name))


def method_sort_key(label: str) -> tuple[int, str]:
    base = label.split(" [", 1)[0].split(" (", 1)[0].lower()
    if base in _METHOD_ORDER:
        return (_METHOD_ORDER.index(base), label)
    if base.startswith("restore"):
        return (len(_METHOD_ORDER) + 1, label)
    return (len(_METHOD_ORDER), label)


@dataclass(frozen=True)
class Stat:
    """One cell: the mean over seeds, the sample std (None for one seed), and which seeds went in."""

    mean: float
    std: float | None
    seeds: tuple[int, ...]

    @property
    def n(self) -> int:
        return len(self.seeds)

    @classmethod
    def of(cls, by_seed: Mapping[int, float]) -> Stat:
        seeds = tuple(sorted(by_seed))
        values = [float(by_seed[s]) for s in seeds]
        return cls(
            mean=statistics.fmean(values),
            std=statistics.stdev(values) if len(values) > 1 else None,
            seeds=seeds,
        )


@dataclass(frozen=True)
class ShiftCurve:
    """Per-layer feature-shift magnitudes of one method, averaged over its runs (all datasets and seeds)."""

    label: str
    vision: tuple[float, ...] | None
    text: tuple[float, ...] | None
    n_runs: int
    discrepancy: float | None


@dataclass(frozen=True)
class B2NCell:
    base: Stat
    novel: Stat

    @property
    def hm(self) -> float:
        """HM of the means (the literature's convention), not the mean of per-seed HMs."""
        return harmonic_mean(self.base.mean, self.novel.mean)


@dataclass(frozen=True)
class B2NRow:
    label: str
    cells: dict[str, B2NCell]
    average: tuple[float, float, float] | None  # base, novel, HM(base, novel)
    n_datasets: int
    published: bool = False


@dataclass(frozen=True)
class B2NTable:
    protocol: str
    backbone: str
    shots: int | None
    datasets: tuple[str, ...]
    rows: tuple[B2NRow, ...]
    shift: tuple[ShiftCurve, ...] = ()
    notes: tuple[str, ...] = ()
    published: tuple[B2NRow, ...] = ()
    published_notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class TargetRow:
    label: str
    cells: dict[str, Stat]
    average: float | None
    n_targets: int


@dataclass(frozen=True)
class TargetTable:
    """Cross-dataset, domain generalisation or plain runs: accuracy per evaluated split of one source dataset."""

    protocol: str
    backbone: str
    shots: int | None
    source: str
    splits: tuple[str, ...]
    averaged: tuple[str, ...]  # the splits the Average is over (targets); empty: no Average column
    rows: tuple[TargetRow, ...]
    shift: tuple[ShiftCurve, ...] = ()
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class FewShotRow:
    label: str
    shots: int
    cells: dict[str, Stat]
    average: float | None
    n_datasets: int


@dataclass(frozen=True)
class FewShotTable:
    protocol: str
    backbone: str
    datasets: tuple[str, ...]
    rows: tuple[FewShotRow, ...]
    shift: tuple[ShiftCurve, ...] = ()
    notes: tuple[str, ...] = ()


Table = B2NTable | TargetTable | FewShotTable


@dataclass
class Aggregation:
    tables: list[Table] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def select_runs(records: Iterable[RunRecord]) -> tuple[list[RunRecord], list[str]]:
    """Finished runs, one per configuration (`grouping.row_key`), dataset, protocol, backbone, shots and seed.

    Runs of different configurations all stay (they become separate rows); only an exact repeat of a
    configuration and seed replaces the earlier run, and the note names both.
    """
    latest: dict[tuple, RunRecord] = {}
    replaced: list[tuple[str, str]] = []  # (older run, the run that counts)
    others: Counter[str] = Counter()
    for r in records:
        if r.status != "finished":
            others[r.status] += 1
            continue
        key = (row_key(r), dataset_label(r), r.protocol, r.backbone, r.shots, r.seed)
        if key in latest:
            old = latest[key]
            if (r.finished_at or "", r.run_id) < (old.finished_at or "", old.run_id):
                replaced.append((r.run_id, old.run_id))
                continue
            replaced.append((old.run_id, r.run_id))
        latest[key] = r
    notes = []
    if others:
        listed = ", ".join(f"{n} {status}" for status, n in sorted(others.items()))
        notes.append(f"Not included (not finished): {listed}.")
    if replaced:
        pairs = "; ".join(f"{old} (repeated by {new})" for old, new in replaced[:5])
        more = f"; and {len(replaced) - 5} more" if len(replaced) > 5 else ""
        notes.append(
            f"{len(replaced)} finished run(s) repeat the same configuration and seed as a later run, which counts "
            f"instead: {pairs}{more}."
        )
    return list(latest.values()), notes


def _shift_curves(runs: Sequence[RunRecord], labels: Mapping[str, str]) -> tuple[tuple[ShiftCurve, ...], list[str]]:
    by_label: dict[str, list[dict]] = defaultdict(list)
    for r in runs:
        shift = r.metrics.get("shift")
        if isinstance(shift, Mapping) and (shift.get("vision") or shift.get("text")):
            by_label[labels[r.run_id]].append(shift)
    curves, notes = [], []
    for label in sorted(by_label, key=method_sort_key):
        shifts = by_label[label]
        means: dict[str, tuple[float, ...] | None] = {}
        for tower in ("vision", "text"):
            series = [tuple(s[tower]) for s in shifts if s.get(tower)]
            if not series:
                means[tower] = None
                continue
            length, _ = Counter(len(c) for c in series).most_common(1)[0]
            kept = [c for c in series if len(c) == length]
            if len(kept) < len(series):
                notes.append(
                    f"{label}: {len(series) - len(kept)} {tower} shift curve(s) with a different number of layers "
                    f"left out of the mean (kept {len(kept)} with {length} layers)."
                )
            means[tower] = tuple(statistics.fmean(c[i] for c in kept) for i in range(length))
        disc = [s["discrepancy"] for s in shifts if isinstance(s.get("discrepancy"), (int, float))]
        curves.append(
            ShiftCurve(
                label=label,
                vision=means["vision"],
                text=means["text"],
                n_runs=len(shifts),
                discrepancy=statistics.fmean(disc) if disc else None,
            )
        )
    return tuple(curves), notes


def _top1(r: RunRecord, split: str) -> float | None:
    entry = r.metrics.get(split)
    if isinstance(entry, Mapping) and isinstance(entry.get("top1"), (int, float)) and math.isfinite(entry["top1"]):
        return float(entry["top1"])
    return None


def _splits(r: RunRecord) -> list[str]:
    return [k for k in r.metrics if k not in RESERVED_METRIC_KEYS]


def b2n_table(
    runs: Sequence[RunRecord], backbone: str, shots: int | None, labels: Mapping[str, str] | None = None
) -> B2NTable:
    """`labels` (run_id → row label, `grouping.row_labels`) defaults to labels made from these runs alone."""
    labels = labels or row_labels(runs)
    datasets = sorted({dataset_label(r) for r in runs}, key=dataset_sort_key)
    notes: list[str] = []
    values: dict[tuple[str, str], dict[str, dict[int, float]]] = defaultdict(lambda: {"base": {}, "novel": {}})
    for r in runs:
        base, novel = _top1(r, "base"), _top1(r, "novel")
        if base is None or novel is None:
            notes.append(f"Run {r.run_id} has no base/novel top1 and is left out.")
            continue
        cell = values[(labels[r.run_id], dataset_label(r))]
        cell["base"][r.seed] = base
        cell["novel"][r.seed] = novel
    rows = []
    for label in sorted({k[0] for k in values}, key=method_sort_key):
        cells = {
            d: B2NCell(Stat.of(values[(label, d)]["base"]), Stat.of(values[(label, d)]["novel"]))
            for d in datasets
            if (label, d) in values
        }
        b = statistics.fmean(c.base.mean for c in cells.values())
        n = statistics.fmean(c.novel.mean for c in cells.values())
        rows.append(B2NRow(label, cells, (b, n, harmonic_mean(b, n)), len(cells)))
    shift, shift_notes = _shift_curves(runs, labels)
    return B2NTable("b2n", backbone, shots, tuple(datasets), tuple(rows), shift, tuple(notes + shift_notes))


def target_table(
    runs: Sequence[RunRecord],
    protocol: str,
    backbone: str,
    shots: int | None,
    source: str,
    labels: Mapping[str, str] | None = None,
) -> TargetTable:
    labels = labels or row_labels(runs)
    split_names: list[str] = []
    for r in runs:
        split_names.extend(s for s in _splits(r) if s not in split_names)
    is_source = {s: norm_name(s) == norm_name(source.split(" (", 1)[0]) for s in split_names}
    if protocol == "train":
        splits = split_names  # the order they were evaluated in
        averaged: list[str] = []
    else:
        splits = [s for s in split_names if is_source[s]] + sorted(
            (s for s in split_names if not is_source[s]), key=dataset_sort_key
        )
        averaged = [s for s in splits if not is_source[s]]
    values: dict[tuple[str, str], dict[int, float]] = defaultdict(dict)
    for r in runs:
        for s in _splits(r):
            acc = _top1(r, s)
            if acc is not None:
                values[(labels[r.run_id], s)][r.seed] = acc
    rows = []
    for label in sorted({k[0] for k in values}, key=method_sort_key):
        cells = {s: Stat.of(values[(label, s)]) for s in splits if (label, s) in values}
        targets = [cells[s].mean for s in averaged if s in cells]
        avg = statistics.fmean(targets) if targets and averaged else None
        rows.append(TargetRow(label, cells, avg, len(targets)))
    shift, notes = _shift_curves(runs, labels)
    return TargetTable(
        protocol, backbone, shots, source, tuple(splits), tuple(averaged), tuple(rows), shift, tuple(notes)
    )


def fewshot_table(runs: Sequence[RunRecord], backbone: str, labels: Mapping[str, str] | None = None) -> FewShotTable:
    labels = labels or row_labels(runs)
    datasets = sorted({dataset_label(r) for r in runs}, key=dataset_sort_key)
    notes: list[str] = []
    values: dict[tuple[str, int, str], dict[int, float]] = defaultdict(dict)
    for r in runs:
        splits = _splits(r)
        split = "test" if "test" in splits else (splits[0] if len(splits) == 1 else None)
        acc = None if split is None else _top1(r, split)
        if acc is None:
            notes.append(f"Run {r.run_id}: no 'test' split (or single split) with top1; left out.")
            continue
        values[(labels[r.run_id], int(r.shots or 0), dataset_label(r))][r.seed] = acc
    rows = []
    keys = sorted({(k[0], k[1]) for k in values}, key=lambda k: (method_sort_key(k[0]), k[1]))
    for label, shots in keys:
        cells = {d: Stat.of(values[(label, shots, d)]) for d in datasets if (label, shots, d) in values}
        avg = statistics.fmean(c.mean for c in cells.values())
        rows.append(FewShotRow(label, shots, cells, avg, len(cells)))
    shift, shift_notes = _shift_curves(runs, labels)
    return FewShotTable("fewshot", backbone, tuple(datasets), tuple(rows), shift, tuple(notes + shift_notes))


_PROTOCOL_ORDER = ("b2n", "xd", "dg", "fewshot", "train")


def aggregate(records: Iterable[RunRecord]) -> Aggregation:
    """All tables for these records: one per protocol × backbone × shots (× source dataset for xd/dg/train)."""
    runs, notes = select_runs(records)
    labels = row_labels(runs)
    groups: dict[tuple, list[RunRecord]] = defaultdict(list)
    for r in runs:
        if r.protocol == "b2n":
            key = (r.protocol, r.backbone, r.shots, "")
        elif r.protocol == "fewshot":
            key = (r.protocol, r.backbone, None, "")
        else:
            key = (r.protocol, r.backbone, r.shots, dataset_label(r))
        groups[key].append(r)

    def order(key: tuple) -> tuple:
        protocol, backbone, shots, source = key
        return (_PROTOCOL_ORDER.index(protocol), backbone, -1 if shots is None else shots, dataset_sort_key(source))

    out = Aggregation(notes=notes)
    for key in sorted(groups, key=order):
        protocol, backbone, shots, source = key
        table: Table
        if protocol == "b2n":
            table = b2n_table(groups[key], backbone, shots, labels)
        elif protocol == "fewshot":
            table = fewshot_table(groups[key], backbone, labels)
        else:
            table = target_table(groups[key], protocol, backbone, shots, source, labels)
        extra = (*schedule_notes(groups[key]), *config_notes(groups[key], labels))
        out.tables.append(replace(table, notes=(*table.notes, *extra)))
    return out


def config_notes(runs: Sequence[RunRecord], labels: Mapping[str, str]) -> tuple[str, ...]:
    """What the brackets in the row labels mean, when a row has them."""
    if not any(" [" in labels[r.run_id] for r in runs):
        return ()
    return (
        "A row is one configuration: [key=value] lists the settings its runs changed from the method's defaults for "
        "the protocol, dataset and schedule set (key=default: the default, named where two rows differ only there); "
        "[name] is the runs' tag (`--tag`, or `restore results tag NAME RUN_ID...` afterwards).",
    )


def schedule_notes(runs: Sequence[RunRecord]) -> tuple[str, ...]:
    """What the parentheses in the row labels mean, and a warning when one table holds two schedule sets."""
    sets = sorted({r.schedule for r in runs if r.schedule})
    if not sets:
        return ()
    notes = [
        "(own): each method's own release schedule; (restore_paper): the RESTORE paper's re-runs of every "
        "baseline (docs/fidelity.md). Runs of different sets are separate rows, never averaged together."
    ]
    if len(sets) > 1:
        notes.append(f"This table mixes schedule sets ({', '.join(sets)}): compare rows of the same set.")
    if any(not r.schedule for r in runs):
        notes.append("Rows without a set in parentheses come from runs recorded before schedule sets existed.")
    return tuple(notes)
