"""`verify`: does every image a dataset lists exist and decode? Counts per class, bad files by path."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from restore.data.images import find_bad_images
from restore.data.load import ClassesMode, absent_classes, drop_classes, missing_files, read_dataset
from restore.data.registry import DatasetSpec, get_dataset
from restore.data.types import DatasetSplits
from restore.errors import ConfigError


@dataclass
class VerifyReport:
    """What `verify_dataset` found. `ok` is False when any listed image is missing or corrupt."""

    dataset: str
    root: Path
    classnames: list[str]
    listed: int
    missing: list[Path]
    corrupt: list[tuple[Path, str]]
    listed_counts: dict[str, list[int]]
    good_counts: dict[str, list[int]]
    dropped_classes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    expected_sizes: tuple[int, int, int] | None = None
    decoded: bool = True

    @property
    def ok(self) -> bool:
        return not self.missing and not self.corrupt

    @property
    def sizes(self) -> tuple[int, int, int]:
        return tuple(sum(self.listed_counts[s]) for s in ("train", "val", "test"))  # type: ignore[return-value]

    @property
    def bad(self) -> list[tuple[Path, str]]:
        return sorted([(p, "missing") for p in self.missing] + self.corrupt)

    def summary(self) -> str:
        n_bad = len(self.missing) + len(self.corrupt)
        state = "OK" if self.ok else f"{n_bad} problem files ({len(self.missing)} missing, {len(self.corrupt)} corrupt)"
        check = "exist and decode" if self.decoded else "exist (not decoded)"
        return f"{self.dataset}: {self.listed} images listed, {self.listed - n_bad} {check}: {state}"


def verify_dataset(
    name: str | DatasetSpec,
    root: str | Path,
    *,
    split_file: str | Path | None = None,
    classes: ClassesMode = "all",
    workers: int = 4,
    decode: bool = True,
    progress: Callable[[int], None] | None = None,
    on_total: Callable[[int], None] | None = None,
) -> VerifyReport:
    """Check every image the dataset lists. `classes="present"` first drops classes with no image on disk.

    `on_total(n)` is called once with the number of files to decode, then `progress(k)` as they are checked.
    """
    spec = get_dataset(name) if isinstance(name, str) else name
    if classes not in ("all", "present"):
        raise ConfigError(f"classes must be 'all' or 'present', got {classes!r}")
    splits = read_dataset(spec, root, split_file=split_file)
    all_items = [*splits.train, *splits.val, *splits.test]
    missing = set() if spec.files_listed else set(missing_files(all_items))
    dropped: list[str] = []
    if classes == "present":
        absent = absent_classes(splits, spec, missing)
        if absent:
            dropped = [splits.classnames[y] for y in absent]
            splits = drop_classes(splits, absent, note=f"classes='present': dropped {len(absent)} classes")
            kept_paths = {d.path for d in (*splits.train, *splits.val, *splits.test)}
            missing &= kept_paths
    paths = sorted({d.path for d in (*splits.train, *splits.val, *splits.test)})
    existing = [p for p in paths if p not in missing]
    if on_total is not None:
        on_total(len(existing) if decode else 0)
    corrupt = []
    if decode:
        bad = find_bad_images(existing, workers=workers, progress=progress)
        # A file that vanished between the listing and the decode counts as missing.
        missing |= {p for p, why in bad if why == "missing"}
        corrupt = [(p, why) for p, why in bad if why != "missing"]
    bad_paths = missing | {p for p, _ in corrupt}
    return VerifyReport(
        dataset=spec.name,
        root=Path(root).expanduser().resolve(),
        classnames=splits.classnames,
        listed=len(paths),
        missing=sorted(missing),
        corrupt=corrupt,
        listed_counts=splits.class_counts(),
        good_counts=_counts(splits, bad_paths),
        dropped_classes=dropped,
        notes=splits.notes,
        expected_sizes=spec.expected_sizes,
        decoded=decode,
    )


def _counts(splits: DatasetSplits, bad: set[Path]) -> dict[str, list[int]]:
    out = {}
    for split, items in (("train", splits.train), ("val", splits.val), ("test", splits.test)):
        counts = [0] * splits.num_classes
        for d in items:
            if d.path not in bad:
                counts[d.label] += 1
        out[split] = counts
    return out
