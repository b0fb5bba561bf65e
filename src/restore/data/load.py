"""`load_dataset`: read a registered dataset from the data root and make sure every listed image is on disk.

A dataset with missing images is never loaded silently smaller: it fails with the count and the first few
paths, unless the caller asks for `classes="present"`, which keeps the classes that are fully on disk, relabels
them from 0 and records in `notes` which classes it dropped.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from restore.data.folder import with_split_file
from restore.data.readers import read_split_file_dataset
from restore.data.registry import DatasetSpec, get_dataset
from restore.data.types import DatasetSplits, Datum
from restore.errors import ConfigError, DataError

ClassesMode = Literal["all", "present"]
SHOW = 5  # how many paths/classes an error message lists


def load_dataset(
    name: str | DatasetSpec,
    root: str | Path,
    *,
    classes: ClassesMode = "all",
    split_file: str | Path | None = None,
) -> DatasetSplits:
    """Load dataset `name` from `root` (the folder holding the dataset folders, CoOp's `$DATA`).

    `split_file` overrides where the split file is read from; by default it is `root/<folder>/<split file>`,
    then `root/splits/<split file>`.
    """
    spec = get_dataset(name) if isinstance(name, str) else name
    if classes not in ("all", "present"):
        raise ConfigError(f"classes must be 'all' or 'present', got {classes!r}")
    root = Path(root).expanduser().resolve()
    splits = read_dataset(spec, root, split_file=split_file)
    return check_files(splits, spec, classes=classes, root=root)


def how_to_get(spec: DatasetSpec, root: Path) -> str:
    if spec.downloadable:
        return f"run `restore data download {spec.name} --root {root}`, or lay it out by hand as CoOp's DATASETS.md"
    if spec.manual:
        return f"it needs a manual step (`restore data download {spec.name}` prints the instructions):\n{spec.manual}"
    return "lay it out as CoOp's DATASETS.md describes"


def read_dataset(spec: DatasetSpec, root: str | Path, *, split_file: str | Path | None = None) -> DatasetSplits:
    """Every entry the dataset lists, without checking that the files exist (what `verify` inspects)."""
    root = Path(root).expanduser().resolve()
    if spec.location is not None:  # an image folder given by path: no data root
        if split_file is not None:
            spec = with_split_file(spec, split_file)
        path, _ = _resolve_split_file(spec, root, spec.location, None)
        return (spec.reader or read_split_file_dataset)(spec, spec.location, path)
    if spec.generate is not None:
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise DataError(f"cannot create the data root {root} for {spec.title}: {e}") from e
        spec.generate(root)
    if not root.is_dir():
        raise DataError(
            f"data root {root} does not exist (it should hold the dataset folders, e.g. {root / spec.folder})",
            hint=how_to_get(spec, root),
        )
    dataset_dir = root / spec.folder
    if not dataset_dir.is_dir():
        raise DataError(
            f"{spec.title}: folder {dataset_dir} does not exist; expected under {root}:\n{spec.expected_layout()}",
            hint=how_to_get(spec, root),
        )
    path, note = _resolve_split_file(spec, root, dataset_dir, split_file)
    reader = spec.reader or read_split_file_dataset
    splits = reader(spec, dataset_dir, path)
    if note:
        splits.notes.insert(0, note)
    return splits


def _resolve_split_file(
    spec: DatasetSpec, root: Path, dataset_dir: Path, split_file: str | Path | None
) -> tuple[Path | None, str | None]:
    if not spec.split_file:
        if split_file is not None:
            raise ConfigError(f"{spec.title} has no split file to override; it is read from:\n{spec.expected_layout()}")
        return None, None
    if split_file is not None:
        path = Path(split_file).expanduser().resolve()
        if not path.is_file():
            raise DataError(f"split file {path} does not exist")
        return path, f"split file {path}"
    standard = dataset_dir / spec.split_file
    if standard.is_file():
        return standard, None
    shared = root / "splits" / spec.split_file
    if shared.is_file():
        return shared, f"split file {shared} (not in {dataset_dir})"
    raise DataError(
        f"{spec.title}: split file {standard} does not exist",
        hint=f"{how_to_get(spec, root)}; or pass the split file's location (split_file= / --split-file)",
    )


def missing_files(items: Iterable[Datum]) -> list[Path]:
    """Paths among `items` that are not files on disk, listing each folder once instead of a stat per file."""
    by_dir: dict[Path, list[Path]] = defaultdict(list)
    for d in items:
        by_dir[d.path.parent].append(d.path)
    missing = []
    for folder, paths in by_dir.items():
        try:
            with os.scandir(folder) as it:
                names = {e.name for e in it}
        except (OSError, ValueError):  # absent, not a folder, a name too long or with a NUL byte: not on disk
            names = set()
        missing.extend(p for p in paths if p.name not in names)
    return sorted(set(missing))


def absent_classes(splits: DatasetSplits, spec: DatasetSpec, missing: set[Path]) -> list[int]:
    """Labels with no image on disk in a split that lists them (folder-listed datasets: in any used split).

    Their missing files are then an absent class (a partial dataset on purpose), not a broken download.
    """
    lists = {"train": splits.train, "val": splits.val, "test": splits.test}
    listed = {s: [0] * splits.num_classes for s in lists}
    on_disk = {s: [0] * splits.num_classes for s in lists}
    for s, items in lists.items():
        for d in items:
            listed[s][d.label] += 1
            if d.path not in missing:
                on_disk[s][d.label] += 1
    used = [s for s, items in lists.items() if items]
    return [
        y
        for y in range(splits.num_classes)
        if any(on_disk[s][y] == 0 and (listed[s][y] > 0 or spec.files_listed) for s in used)
    ]


def check_files(
    splits: DatasetSplits, spec: DatasetSpec, *, classes: ClassesMode = "all", root: Path | None = None
) -> DatasetSplits:
    """Fail on missing images, or with classes='present' drop the classes that have none on disk."""
    all_items = [*splits.train, *splits.val, *splits.test]
    missing = set() if spec.files_listed else set(missing_files(all_items))
    absent = absent_classes(splits, spec, missing)
    absent_set = set(absent)
    partial = sorted({d.path for d in all_items if d.path in missing and d.label not in absent_set})
    n_listed = len({d.path for d in all_items})

    if partial or (absent and classes == "all"):
        raise DataError(
            _missing_message(splits, spec, missing, n_listed, absent, partial, classes), hint=_hint(spec, root)
        )
    if not absent:
        out = splits
    else:
        kept = [y for y in range(splits.num_classes) if y not in absent_set]
        if not kept:
            raise DataError(
                f"{spec.title}: none of its {splits.num_classes} classes has images on disk under {splits.image_root}",
                hint=_hint(spec, root),
            )
        names = [splits.classnames[y] for y in absent]
        out = drop_classes(
            splits,
            absent,
            note=f"classes='present': kept {len(kept)} of {splits.num_classes} classes; dropped {len(absent)} "
            f"with no images on disk: {_preview(names, 20)}",
        )
    if spec.expected_sizes and not absent and out.sizes() != spec.expected_sizes:
        out.notes.append(
            f"split sizes {out.sizes()} differ from the published {spec.expected_sizes}: results are not "
            "comparable with published numbers"
        )
    return out


def drop_classes(splits: DatasetSplits, labels: list[int], *, note: str) -> DatasetSplits:
    drop = set(labels)
    return splits.subset_labels([y for y in range(splits.num_classes) if y not in drop], note=note)


def _preview(xs: list, n: int = SHOW) -> str:
    shown = ", ".join(str(x) for x in xs[:n])
    return shown + (f", ... ({len(xs) - n} more)" if len(xs) > n else "")


def _missing_message(
    splits: DatasetSplits,
    spec: DatasetSpec,
    missing: set[Path],
    n_listed: int,
    absent: list[int],
    partial: list[Path],
    classes: ClassesMode,
) -> str:
    lines = []
    if missing:
        lines.append(f"{spec.title}: {len(missing)} of {n_listed} listed images are missing under {splits.image_root}")
    else:
        lines.append(f"{spec.title}: class folders are missing under {splits.image_root}")
    if absent:
        names = [splits.classnames[y] for y in absent]
        lines.append(f"{len(absent)} of {splits.num_classes} classes have no images: {_preview(names, 10)}")
    if partial:
        what = "of classes that are present" if absent else ""
        lines.append(
            f"{len(partial)} images {what} are missing, e.g. {_preview([str(p) for p in partial])}".replace("  ", " ")
        )
    elif missing:
        lines.append(f"first missing: {_preview([str(p) for p in sorted(missing)], 3)}")
    if classes == "present" and partial:
        lines.append("classes='present' drops only classes with no images, not single missing files")
    return "\n  ".join(lines)


def _hint(spec: DatasetSpec, root: Path | None) -> str:
    if spec.location is not None:  # an image folder read through a split file of the user's
        return (
            f"the split file's paths are relative to {spec.location}; `restore data verify {spec.location} "
            f"--root {spec.location.parent} --split-file FILE` lists every missing file"
        )
    root = root or "ROOT"
    return (
        f"run `restore data verify {spec.name} --root {root}` for a full report; to use only the classes on disk "
        "pass classes='present' (CLI: --classes present); to complete the dataset re-download or re-extract it"
    )
