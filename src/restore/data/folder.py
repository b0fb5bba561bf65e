"""Your own images as a dataset: ``-d /path/to/folder`` with one sub-folder per class, or any dataset with a
CoOp-format split file of your own (``data.split_file``).

An image folder has no split of its own, so one is drawn per class, seeded (``data.split_seed``) with the
fractions ``data.split_val`` / ``data.split_test`` (the rest trains; defaults 0.2 / 0.3, the rule CoOp's DTD
split follows). The draw depends only on the sorted file names of each class and those three values, so the
run's ``config.yaml`` rebuilds it; the run also writes the split it used as ``split.json`` (a CoOp split file)
beside its config, and `restore eval --checkpoint` on the run's own folder reads that file back.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path

from restore.data.registry import DatasetSpec, get_dataset
from restore.data.types import DatasetSplits, Datum
from restore.errors import ConfigError, DataError
from restore.fileio import atomic_write_json

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm"})
SPLIT_FILE = "split.json"  # the split a run of an image folder used, written into its run directory


@dataclass(frozen=True)
class FolderSplit:
    """How an image folder's classes are split: seeded fractions of each class for val and test."""

    seed: int = 1
    val: float = 0.2
    test: float = 0.3

    def counts(self, n: int) -> tuple[int, int, int]:
        """(train, val, test) sizes for a class of ``n`` images: test and (if asked) val get at least one."""
        n_test = max(1, round(n * self.test))
        n_val = max(1, round(n * self.val)) if self.val > 0 else 0
        return n - n_val - n_test, n_val, n_test


def looks_like_path(name: str) -> bool:
    """A dataset argument meant as a folder: absolute, home- or dot-relative, or holding a path separator."""
    return name.startswith(("/", "~", ".")) or os.sep in name or "/" in name


@cache
def folder_spec(path: str, split: FolderSplit = FolderSplit()) -> DatasetSpec:
    """The dataset spec of an image folder. Its name is the folder's absolute path (what runs record), its
    title the folder's name; the data root plays no part."""
    location = Path(path).expanduser().resolve()
    if not location.is_dir():
        what = "is not a folder" if location.exists() else "does not exist"
        raise DataError(
            f"image folder {location} {what}",
            hint="pass a registered dataset name (`restore data list`) or a folder laid out as "
            "<folder>/<class name>/<image> (one sub-folder per class)",
        )
    return DatasetSpec(
        name=str(location),
        title=location.name,
        folder=location.name,
        image_dir="",
        reader=read_image_folder,
        files_listed=True,
        layout=f"  {location}/<class name>/<image>   (one sub-folder per class; _ in a name reads as a space)",
        description="your image folder",
        default_root=lambda: location.parent,
        location=location,
        folder_split=split,
    )


def configured_spec(
    name: str, *, split_file: str | Path | None = None, split: FolderSplit | None = None
) -> DatasetSpec:
    """The spec a run uses: the registered or folder dataset ``name`` with the run's split settings."""
    spec = get_dataset(name)
    if spec.location is not None and split is not None:
        check_split(split)
        spec = folder_spec(spec.name, split)
    if split_file is not None:
        spec = with_split_file(spec, split_file)
    return spec


def check_split(split: FolderSplit) -> None:
    if split.val + split.test >= 1:
        raise ConfigError(
            f"data.split_val + data.split_test = {split.val + split.test:g} leaves no image to train on",
            hint="keep their sum below 1 (defaults: split_val=0.2, split_test=0.3)",
        )


def with_split_file(spec: DatasetSpec, split_file: str | Path) -> DatasetSpec:
    """``spec`` read through a CoOp-format split file of the user's (paths relative to its image folder)."""
    path = Path(split_file).expanduser().resolve()
    if not path.is_file():
        raise DataError(
            f"split file {path} does not exist",
            hint='a CoOp split file: {"train"|"val"|"test": [[relative path, label, class name], ...]}',
        )
    if spec.location is not None:
        return replace(spec, reader=None, split_file=str(path), files_listed=False, folder_split=None)
    if not spec.split_file:
        raise ConfigError(
            f"{spec.title} is read from its own layout and takes no split file:\n{spec.expected_layout()}",
            hint="data.split_file works with split-file datasets and image folders (-d PATH)",
        )
    return replace(spec, split_file=str(path))  # an absolute name: read_dataset joins it to nothing


def class_name(folder: str) -> str:
    return folder.replace("_", " ").strip()


def list_images(location: Path) -> dict[str, list[Path]]:
    """Folder name -> sorted image files of each class sub-folder (hidden folders and other files ignored)."""
    try:
        folders = sorted(p for p in location.iterdir() if p.is_dir() and not p.name.startswith("."))
        return {
            f.name: sorted(p for p in f.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            for f in folders
        }
    except OSError as e:
        raise DataError(
            f"cannot read image folder {location}: {e.strerror or e}", hint="check its permissions"
        ) from None


def read_image_folder(spec: DatasetSpec, dataset_dir: Path, split_file: Path | None) -> DatasetSplits:
    """Every class sub-folder's images, split per class by ``spec.folder_split`` (a seeded shuffle of the
    sorted file names: the same folder and settings give the same split on any machine)."""
    location = spec.location or dataset_dir
    split = spec.folder_split or FolderSplit()
    check_split(split)
    by_class = list_images(location)
    empty = [name for name, files in by_class.items() if not files]
    if len(by_class) - len(empty) < 2:
        raise DataError(
            f"image folder {location} has {len(by_class) - len(empty)} class folders with images; "
            "a classifier needs at least 2",
            hint=f"lay it out as {location}/<class name>/<image> ({', '.join(sorted(IMAGE_SUFFIXES))})",
        )
    if empty:
        raise DataError(
            f"image folder {location}: {len(empty)} class folders hold no images: {', '.join(empty[:5])}",
            hint=f"add images ({', '.join(sorted(IMAGE_SUFFIXES))}) or remove those folders",
        )
    names = list(by_class)
    short = [(n, len(by_class[n])) for n in names if split.counts(len(by_class[n]))[0] < 1]
    if short:
        need = next(n for n in range(1, 1000) if split.counts(n)[0] >= 1)
        listed = ", ".join(f"{n} ({k})" for n, k in short[:5])
        raise DataError(
            f"image folder {location}: {len(short)} classes have too few images for a train/val/test split "
            f"(val {split.val:g}, test {split.test:g}): {listed}",
            hint=f"give each class at least {need} images, or lower data.split_val / data.split_test",
        )
    lists: dict[str, list[Datum]] = {"train": [], "val": [], "test": []}
    for label, name in enumerate(names):
        files = list(by_class[name])
        random.Random(f"{split.seed}/{name}").shuffle(files)
        n_train, n_val, _ = split.counts(len(files))
        cname = class_name(name)
        parts = {"train": files[:n_train], "val": files[n_train : n_train + n_val], "test": files[n_train + n_val :]}
        for key, part in parts.items():
            lists[key] += [Datum(p, label, cname) for p in sorted(part)]
    note = (
        f"image folder {location}: {len(names)} classes, split per class with seed {split.seed} "
        f"(val {split.val:g}, test {split.test:g})"
    )
    return DatasetSplits(
        spec.name, [class_name(n) for n in names], lists["train"], lists["val"], lists["test"],
        notes=[note], image_root=location,
    )  # fmt: skip


def write_split_file(splits: DatasetSplits, path: Path) -> None:
    """``splits`` as a CoOp split file, paths relative to its image root (what a run of a folder records)."""
    root = splits.image_root
    assert root is not None

    def rows(items: list[Datum]) -> list[list[object]]:
        return [[d.path.relative_to(root).as_posix(), d.label, d.classname] for d in items]

    atomic_write_json(path, {"train": rows(splits.train), "val": rows(splits.val), "test": rows(splits.test)})
