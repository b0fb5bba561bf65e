"""Small generated datasets in the real on-disk layout of any registry entry, for tests of every area.

Images are tiny JPEGs whose colour and pattern depend on the class (so a model can learn them) with per-image
jitter (so no two are identical). Optionally some files are corrupt (a truncated JPEG whose header still
parses, as a broken download looks) or missing, to exercise `verify` and the loader's error paths.
"""

from __future__ import annotations

import colorsys
import io
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from restore.data.readers import (
    imagenet_classnames,
    imagenet_wnids,
    read_fgvc_aircraft,
    read_imagenet,
    read_imagenet_v2,
    read_split_file_dataset,
    standard_imagenet_classnames,
)
from restore.data.registry import DatasetSpec, get_dataset
from restore.errors import ConfigError

COLOURS = ["red", "green", "blue", "yellow", "purple", "orange", "cyan", "pink", "brown", "grey"]
PATTERNS = ["plain", "stripes", "checks", "dots"]


@dataclass
class FakeDataset:
    """What `make_dataset_tree` wrote: where, which classes, and which files it broke on purpose."""

    root: Path
    spec: DatasetSpec
    classnames: list[str]
    sizes: tuple[int, int, int]
    corrupt: list[Path] = field(default_factory=list)
    missing: list[Path] = field(default_factory=list)
    partial: bool = False  # only some of the dataset's fixed classes (ImageNet family): load with classes="present"

    @property
    def dataset_dir(self) -> Path:
        return self.root / self.spec.folder


def fake_image(label: int, num_classes: int, size: int, rng: np.random.Generator) -> Image.Image:
    """A size×size RGB image: hue from the label, pattern from the label, small noise and offset per image."""
    hue = (label % len(COLOURS)) / len(COLOURS) if num_classes <= len(COLOURS) else label / num_classes
    base = np.array(colorsys.hsv_to_rgb(hue, 0.9, 0.9)) * 255
    yy, xx = np.mgrid[0:size, 0:size]
    off = int(rng.integers(0, 4))
    period = max(2, size // 4)
    pattern = (label // len(COLOURS)) % len(PATTERNS) if num_classes > len(COLOURS) else label % len(PATTERNS)
    if pattern == 1:
        mask = ((yy + off) // (period // 2 or 1)) % 2
    elif pattern == 2:
        mask = (((yy + off) // (period // 2 or 1)) + ((xx + off) // (period // 2 or 1))) % 2
    elif pattern == 3:
        mask = (((yy + off) % period - period / 2) ** 2 + ((xx + off) % period - period / 2) ** 2) < (period / 3) ** 2
    else:
        mask = np.zeros((size, size), dtype=bool)
    img = np.where(mask[..., None], base * 0.35, base)
    img = img + rng.normal(0, 6, img.shape)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")


def _classname(label: int, num_classes: int) -> str:
    colour = COLOURS[label % len(COLOURS)]
    pattern = (
        PATTERNS[(label // len(COLOURS)) % len(PATTERNS)]
        if num_classes > len(COLOURS)
        else PATTERNS[label % len(PATTERNS)]
    )
    name = f"{colour} {pattern}"
    cycle = len(COLOURS) * len(PATTERNS)
    return name if label < cycle else f"{name} {label // cycle}"


def _jpeg_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=90)
    return buf.getvalue()


class _Writer:
    def __init__(self, num_classes: int, size: int, seed: int) -> None:
        self.num_classes, self.size = num_classes, size
        self.rng = np.random.default_rng(seed)
        self.written: list[Path] = []

    def write(self, path: Path, label: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_jpeg_bytes(fake_image(label, self.num_classes, self.size, self.rng)))
        self.written.append(path)


def make_dataset_tree(
    root: str | Path,
    name: str | DatasetSpec,
    *,
    num_classes: int = 4,
    per_class: tuple[int, int, int] = (4, 2, 2),
    size: int = 16,
    corrupt: int = 0,
    missing: int = 0,
    classnames_txt: bool = False,
    seed: int = 0,
) -> FakeDataset:
    """Write a small dataset `name` under `root` in its registry layout, with its split file.

    `per_class` images per class for train/val/test (test-only datasets use only the test count).
    `corrupt`/`missing` files are chosen at random among the written images (corrupt ones truncated,
    missing ones deleted after the split file lists them). `classnames_txt` writes CoOp's ImageNet
    classnames.txt (ImageNet family). Images are `size`×`size` pixels.
    """
    spec = get_dataset(name) if isinstance(name, str) else name
    root = Path(root).expanduser().resolve()
    if num_classes < 1 or size < 1 or min(per_class) < 0:
        raise ConfigError("make_dataset_tree needs num_classes >= 1, size >= 1 and non-negative per_class counts")
    writer = _Writer(num_classes, size, seed)
    dataset_dir = root / spec.folder
    reader = spec.reader or read_split_file_dataset
    partial = False
    if reader is read_split_file_dataset:
        classnames = _write_split_file_dataset(spec, dataset_dir, writer, per_class)
    elif reader is read_fgvc_aircraft:
        classnames = _write_fgvc(spec, dataset_dir, writer, per_class)
    elif spec.files_listed:
        classnames, partial = _write_imagenet_family(spec, reader, dataset_dir, writer, per_class, classnames_txt)
    else:
        raise ConfigError(f"make_dataset_tree does not know how to lay out {spec.name!r} (custom reader)")

    written = list(writer.written)
    pick = random.Random(seed + 1).sample(written, min(len(written), corrupt + missing))
    corrupt_paths, missing_paths = sorted(pick[:corrupt]), sorted(pick[corrupt:])
    for p in corrupt_paths:
        data = p.read_bytes()
        p.write_bytes(data[: max(len(data) // 2, 200)][: len(data) - 1])
    for p in missing_paths:
        p.unlink()
    test_only = spec.test_only
    sizes = (0, 0, per_class[2] * num_classes) if test_only else tuple(n * num_classes for n in per_class)
    if reader is read_imagenet:
        sizes = (per_class[0] * num_classes, per_class[2] * num_classes, per_class[2] * num_classes)
    return FakeDataset(root, spec, classnames, sizes, corrupt_paths, missing_paths, partial)  # type: ignore[arg-type]


def _relpath(spec: DatasetSpec, split: str, classname: str, label: int, i: int, counter: list[int]) -> str:
    """A path in the style of the real dataset (class folders; OxfordPets flat; StanfordCars by split)."""
    counter[0] += 1
    folder = classname.replace(" ", "_")
    if spec.name == "oxford_pets":
        return f"{folder.capitalize()}_{counter[0]}.jpg"
    if spec.name == "stanford_cars":
        return f"cars_{'test' if split == 'test' else 'train'}/{counter[0]:05d}.jpg"
    return f"{folder}/{folder}_{counter[0]:04d}.jpg"


def _write_split_file_dataset(spec: DatasetSpec, dataset_dir: Path, w: _Writer, per_class) -> list[str]:
    classnames = [_classname(y, w.num_classes) for y in range(w.num_classes)]
    image_root = dataset_dir / spec.image_dir if spec.image_dir else dataset_dir
    counter = [0]
    split: dict[str, list] = {}
    for s, n in zip(("train", "val", "test"), per_class, strict=True):
        rows = []
        for y, cname in enumerate(classnames):
            for i in range(n):
                rel = _relpath(spec, s, cname, y, i, counter)
                w.write(image_root / rel, y)
                rows.append([rel, y, cname])
        split[s] = rows
    assert spec.split_file
    (dataset_dir / spec.split_file).write_text(json.dumps(split, indent=1))
    return classnames


def _write_fgvc(spec: DatasetSpec, dataset_dir: Path, w: _Writer, per_class) -> list[str]:
    classnames = [f"{700 + 7 * y}-{100 + y}" for y in range(w.num_classes)]  # variant names like "707-320"
    (dataset_dir).mkdir(parents=True, exist_ok=True)
    (dataset_dir / "variants.txt").write_text("".join(f"{c}\n" for c in classnames))
    image_id = 1000000
    for s, n in zip(("train", "val", "test"), per_class, strict=True):
        lines = []
        for y, cname in enumerate(classnames):
            for _ in range(n):
                image_id += 1
                w.write(dataset_dir / spec.image_dir / f"{image_id:07d}.jpg", y)
                lines.append(f"{image_id:07d} {cname}\n")
        (dataset_dir / f"images_variant_{s}.txt").write_text("".join(lines))
    return classnames


def _write_imagenet_family(spec, reader, dataset_dir: Path, w: _Writer, per_class, classnames_txt: bool):
    table = imagenet_wnids()
    subset = {"imagenet_a": "imagenet_a", "imagenet_r": "imagenet_r"}.get(spec.name, "imagenet")
    wnids = table[subset]
    if w.num_classes > len(wnids):
        raise ConfigError(f"{spec.name} has {len(wnids)} classes; asked for {w.num_classes}")
    if classnames_txt:
        dataset_dir.mkdir(parents=True, exist_ok=True)
        names = standard_imagenet_classnames()
        (dataset_dir / "classnames.txt").write_text(
            "".join(f"{wn} {n}\n" for wn, n in zip(table["imagenet"], names, strict=True))
        )
    image_dir = dataset_dir / spec.image_dir
    for y in range(w.num_classes):
        if reader is read_imagenet:
            for s, n in (("train", per_class[0]), ("val", per_class[2])):
                for i in range(n):
                    w.write(image_dir / s / wnids[y] / f"{wnids[y]}_{s}_{i:05d}.JPEG", y)
        elif reader is read_imagenet_v2:
            for i in range(per_class[2]):
                w.write(image_dir / str(y) / f"{i:040x}.jpeg", y)
        else:
            for i in range(per_class[2]):
                w.write(image_dir / wnids[y] / f"{spec.name}_{i:04d}.jpg", y)
    names, _ = imagenet_classnames(dataset_dir, wnids)
    return names[: w.num_classes], w.num_classes < len(wnids)
