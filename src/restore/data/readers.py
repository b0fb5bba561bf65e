"""Readers for the on-disk formats: CoOp split files, FGVCAircraft's text files, ImageNet-style class folders.

Readers return every entry a dataset lists, whether or not its file exists; `load_dataset` checks the files.
"""

from __future__ import annotations

import json
import os
import warnings
from collections import Counter
from functools import cache
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import Any

from restore.data.registry import DatasetSpec
from restore.data.types import DatasetSplits, Datum
from restore.errors import DataError, DataWarning
from restore.openclip_files import open_clip_module
from restore.options import clip_text, short

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm"})
SPLITS = ("train", "val", "test")
MAX_LABEL = 10_000_000  # far more classes than any dataset: a larger label is a damaged split file


# --------------------------------------------------------------------------------------------- split files
def read_split_json(path: Path) -> dict[str, list[tuple[str, int, str]]]:
    """Parse and validate a CoOp split file: {"train"|"val"|"test": [[relpath, label, classname], ...]}."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"split file {path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(
            f"split file {path} is not valid JSON ({e})", hint="download it again or regenerate it"
        ) from None
    except RecursionError:  # brackets nested thousands deep: no split file, and no reason for a traceback
        raise DataError(
            f"split file {path} is nested too deeply to be a split file", hint="it must be a CoOp split file"
        ) from None
    except ValueError as e:  # valid JSON Python will not read: an integer of more than 4300 digits
        raise DataError(
            f"split file {path} cannot be read: {clip_text(str(e), 120)}",
            hint="labels are small non-negative integers; regenerate the split file",
        ) from None
    if not isinstance(data, dict) or not any(k in data for k in SPLITS):
        raise DataError(f"split file {path} has no 'train'/'val'/'test' lists", hint="it must be a CoOp split file")
    out: dict[str, list[tuple[str, int, str]]] = {}
    for split in SPLITS:
        entries = data.get(split, [])
        if not isinstance(entries, list):
            raise DataError(f"split file {path}: '{split}' is not a list")
        rows = []
        for i, e in enumerate(entries):
            if not _valid_entry(e):
                raise DataError(
                    f"split file {path}: {split}[{i}] = {short(e)} is not [relative_path, label, classname]",
                    hint=f"entries must be [str, int from 0 to {MAX_LABEL}, str]",
                )
            if not e[2].strip():
                raise DataError(
                    f"split file {path}: {split}[{i}] has an empty class name",
                    hint="every entry names its class: prompts are built from the class names",
                )
            rel = PurePosixPath(e[0])
            if rel.is_absolute() or ".." in rel.parts:
                raise DataError(
                    f"split file {path}: {split}[{i}] path {short(e[0])} escapes the image folder",
                    hint="split-file paths must be relative to the dataset's image folder",
                )
            rows.append((e[0], int(e[1]), e[2]))
        out[split] = rows
    return out


def _valid_entry(e: Any) -> bool:
    return (
        isinstance(e, list | tuple)
        and len(e) == 3
        and isinstance(e[0], str)
        and e[0] != ""
        and isinstance(e[1], int)
        and not isinstance(e[1], bool)
        and 0 <= e[1] <= MAX_LABEL
        and isinstance(e[2], str)
    )


def split_file_warnings(entries: dict[str, list[tuple[str, int, str]]], classnames: list[str]) -> list[str]:
    """What loads but looks wrong: an image listed twice (in one split, or in training and test: a leak) and
    two labels with one class name (their prompts, and so their predictions, are the same). Real datasets
    have the second (ImageNet's two "crane"s), so these are warnings, not errors."""
    out = []
    for split in SPLITS:
        paths = [rel for rel, _, _ in entries.get(split, [])]
        twice = len(paths) - len(set(paths))
        if twice:
            first = next(p for p, n in Counter(paths).items() if n > 1)
            out.append(f"{twice} duplicate entries in '{split}' (e.g. {short(first)}): they count more than once")
    train = {rel for rel, _, _ in entries.get("train", [])}
    leaked = sorted({rel for rel, _, _ in entries.get("test", []) if rel in train})
    if leaked:
        out.append(
            f"{len(leaked)} test images are also training images (e.g. {short(leaked[0])}): test accuracy is inflated"
        )
    by_name: dict[str, list[int]] = {}
    for label, name in enumerate(classnames):
        by_name.setdefault(name.strip().lower(), []).append(label)
    shared = [(name, labels) for name, labels in by_name.items() if len(labels) > 1]
    if shared:
        name, labels = shared[0]
        out.append(
            f"{len(shared)} class names are used by more than one label (e.g. {short(name)}: labels {labels[:5]}): "
            "those classes get the same prompts and cannot be told apart"
        )
    return out


def classnames_from_entries(entries: dict[str, list[tuple[str, int, str]]], source: Path) -> list[str]:
    """Label -> class name; labels must be 0..n-1 and each label must have one class name."""
    names: dict[int, str] = {}
    for split in SPLITS:
        for _, label, cname in entries.get(split, []):
            prev = names.setdefault(label, cname)
            if prev != cname:
                raise DataError(
                    f"{source}: label {label} is called both {short(prev)} and {short(cname)}",
                    hint="give each label one class name in every split",
                )
    if not names:
        raise DataError(f"{source} lists no images", hint="its 'train', 'val' and 'test' lists are all empty")
    if max(names) >= len(names):  # some label in 0..max never appears (checked without building that range)
        missing = [y for y in range(min(max(names), len(names) + 10)) if y not in names]
        raise DataError(
            f"{source}: labels must be 0..{max(names)} without gaps; labels {missing[:10]} never appear",
            hint="relabel the split file so its classes are numbered consecutively from 0",
        )
    return [names[i] for i in range(len(names))]


def read_split_file_dataset(spec: DatasetSpec, dataset_dir: Path, split_file: Path | None) -> DatasetSplits:
    """The generic reader: image folder + CoOp split file (10 of the 11 CoOp datasets and any registered one)."""
    assert split_file is not None
    entries = read_split_json(split_file)
    classnames = classnames_from_entries(entries, split_file)
    image_root = (dataset_dir / spec.image_dir) if spec.image_dir else dataset_dir
    lists = {split: [Datum(image_root / rel, label, cname) for rel, label, cname in entries[split]] for split in SPLITS}
    notes = []
    for problem in split_file_warnings(entries, classnames):
        warnings.warn(f"{split_file}: {problem}", DataWarning, stacklevel=2)
        notes.append(f"warning: {problem}")
    return DatasetSplits(
        spec.name, classnames, lists["train"], lists["val"], lists["test"], notes=notes, image_root=image_root
    )


# ------------------------------------------------------------------------------------------- FGVC Aircraft
def read_fgvc_aircraft(spec: DatasetSpec, dataset_dir: Path, split_file: Path | None) -> DatasetSplits:
    """`variants.txt` (one class per line, label = line index) and `images_variant_{split}.txt` ('<id> <variant>')."""
    variants_file = dataset_dir / "variants.txt"
    classnames = [line.strip() for line in _read_lines(variants_file) if line.strip()]
    label_of = {c: i for i, c in enumerate(classnames)}
    image_root = dataset_dir / spec.image_dir
    lists: dict[str, list[Datum]] = {}
    for split in SPLITS:
        path = dataset_dir / f"images_variant_{split}.txt"
        items = []
        for n, line in enumerate(_read_lines(path), start=1):
            parts = line.strip().split(" ")
            if not parts[0]:
                continue
            if len(parts) < 2:
                raise DataError(f"{path}:{n}: expected '<image id> <variant>', got {line.strip()!r}")
            variant = " ".join(parts[1:])
            if variant not in label_of:
                raise DataError(f"{path}:{n}: variant {variant!r} is not in {variants_file}")
            items.append(Datum(image_root / f"{parts[0]}.jpg", label_of[variant], variant))
        lists[split] = items
    return DatasetSplits(spec.name, classnames, lists["train"], lists["val"], lists["test"], image_root=image_root)


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except FileNotFoundError:
        raise DataError(f"{path} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read {path}: {e}") from None


# ------------------------------------------------------------------------------------ ImageNet and variants
@cache
def imagenet_wnids() -> dict[str, tuple[str, ...]]:
    """The 1000 ImageNet wnids in sorted (= label) order, and the 200 of ImageNet-A and -R."""
    data = json.loads(resources.files("restore.data").joinpath("imagenet_wnids.json").read_text())
    return {k: tuple(v) for k, v in data.items() if not k.startswith("_")}


def read_classnames_txt(path: Path) -> dict[str, str]:
    """CoOp's `classnames.txt`: '<wnid> <class name words>' per line."""
    out = {}
    for n, line in enumerate(_read_lines(path), start=1):
        parts = line.strip().split(" ")
        if not parts[0]:
            continue
        if len(parts) < 2:
            raise DataError(f"{path}:{n}: expected '<wnid> <class name>', got {line.strip()!r}")
        out[parts[0]] = " ".join(parts[1:])
    return out


def imagenet_classnames(dataset_dir: Path, wnids: tuple[str, ...]) -> tuple[list[str], str]:
    """Class names for `wnids` and where they came from.

    The dataset's own `classnames.txt`, else the one in `imagenet/` beside it, else open_clip's standard list
    (CLIP's curated names, in sorted-wnid order).
    """
    for path in (dataset_dir / "classnames.txt", dataset_dir.parent / "imagenet" / "classnames.txt"):
        if path.is_file():
            table = read_classnames_txt(path)
            missing = [w for w in wnids if w not in table]
            if missing:
                raise DataError(
                    f"{path} has no class name for {len(missing)} wnids, e.g. {missing[:5]}",
                    hint="use CoOp's classnames.txt (1000 lines '<wnid> <name>') or delete it to use open_clip's list",
                )
            return [table[w] for w in wnids], f"class names from {path}"
    index = {w: i for i, w in enumerate(imagenet_wnids()["imagenet"])}
    names = standard_imagenet_classnames()
    return [names[index[w]] for w in wnids], "class names from open_clip's ImageNet list"


@cache
def standard_imagenet_classnames() -> tuple[str, ...]:
    """CLIP's curated ImageNet class names (as open_clip ships them), indexed by ImageNet label.

    Loaded by file (restore.openclip_files): no need to import open_clip for a list of names.
    """
    return tuple(open_clip_module("zero_shot_metadata").IMAGENET_CLASSNAMES)


def list_images(folder: Path) -> tuple[list[str], int]:
    """Sorted image file names in `folder` (sorted so a listing is the same on every file system)."""
    names, ignored = [], 0
    try:
        with os.scandir(folder) as it:
            for e in it:
                if e.name.startswith("."):
                    continue
                if Path(e.name).suffix.lower() in IMAGE_EXTENSIONS and e.is_file():
                    names.append(e.name)
                else:
                    ignored += 1
    except FileNotFoundError:
        return [], 0
    return sorted(names), ignored


def _class_folder_items(image_dir: Path, folders: list[str], classnames: list[str]) -> tuple[list[Datum], int]:
    items, ignored = [], 0
    for label, folder in enumerate(folders):
        names, ign = list_images(image_dir / folder)
        ignored += ign
        items.extend(Datum(image_dir / folder / n, label, classnames[label]) for n in names)
    return items, ignored


def _require_dir(path: Path, what: str) -> None:
    if not path.is_dir():
        raise DataError(f"{what} folder {path} does not exist")


def read_imagenet(spec: DatasetSpec, dataset_dir: Path, split_file: Path | None) -> DatasetSplits:
    """`images/train/<wnid>/*` and `images/val/<wnid>/*`; label = the wnid's index among the 1000 sorted wnids.

    As in CoOp, the val set doubles as the test set. Labels come from the fixed wnid list, not from the folders
    present, so a missing class folder is reported instead of silently shifting every label after it.
    """
    wnids = imagenet_wnids()["imagenet"]
    classnames, source = imagenet_classnames(dataset_dir, wnids)
    image_dir = dataset_dir / spec.image_dir
    _require_dir(image_dir / "train", "ImageNet training")
    _require_dir(image_dir / "val", "ImageNet validation")
    train, ign_train = _class_folder_items(image_dir / "train", list(wnids), classnames)
    test, ign_val = _class_folder_items(image_dir / "val", list(wnids), classnames)
    notes = [source, "ImageNet has no separate val split: val is the test set (CoOp convention)"]
    if ign_train + ign_val:
        notes.append(f"ignored {ign_train + ign_val} non-image files")
    return DatasetSplits(spec.name, classnames, train, list(test), test, notes=notes, image_root=image_dir)


def read_imagenet_v2(spec: DatasetSpec, dataset_dir: Path, split_file: Path | None) -> DatasetSplits:
    """`imagenetv2-matched-frequency-format-val/<label>/*` with integer folder names 0..999 (ImageNet labels)."""
    wnids = imagenet_wnids()["imagenet"]
    classnames, source = imagenet_classnames(dataset_dir, wnids)
    image_dir = dataset_dir / spec.image_dir
    _require_dir(image_dir, "ImageNet-V2 image")
    test, ignored = _class_folder_items(image_dir, [str(i) for i in range(len(wnids))], classnames)
    notes = [source] + ([f"ignored {ignored} non-image files"] if ignored else [])
    return DatasetSplits(spec.name, classnames, [], [], test, notes=notes, image_root=image_dir)


def wnid_folder_reader(subset: str) -> Any:
    """Reader for `<image_dir>/<wnid>/*` datasets: ImageNet-Sketch (1000 wnids), ImageNet-A and -R (200 each).

    Labels follow the sorted wnid subset, as CoOp does (so -A/-R are 200-way); `parent_labels` maps them onto
    ImageNet's 1000 labels.
    """

    def read(spec: DatasetSpec, dataset_dir: Path, split_file: Path | None) -> DatasetSplits:
        table = imagenet_wnids()
        wnids = table[subset]
        classnames, source = imagenet_classnames(dataset_dir, wnids)
        image_dir = dataset_dir / spec.image_dir
        _require_dir(image_dir, f"{spec.title} image")
        test, ignored = _class_folder_items(image_dir, list(wnids), classnames)
        notes = [source] + ([f"ignored {ignored} non-image files"] if ignored else [])
        parent = None
        if subset != "imagenet":
            index = {w: i for i, w in enumerate(table["imagenet"])}
            parent = [index[w] for w in wnids]
        return DatasetSplits(
            spec.name, classnames, [], [], test, notes=notes, image_root=image_dir, parent_labels=parent
        )

    read.__name__ = f"read_{subset}_folders"
    return read
