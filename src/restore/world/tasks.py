"""Downstream classification tasks in the synthetic world, written in the CoOp dataset format on first use.

Layout under ``$RESTORE_CACHE/world/<task>/``: ``images/<class_folder>/<split>_<k>.png`` and
``split_world_<Title>.json`` = {"train"|"val"|"test": [[relpath, label, classname], ...]}, relpaths relative
to ``images/``. Images are a pure function of the task, so the files are a cache: `task_images` renders the
same pixels in memory (PNG is lossless), which is what pretraining's periodic evaluation uses.

Base-to-novel (first ceil(n/2) labels are base): the combination tasks order their labels on a checkerboard
of the attribute grid, so every colour (pattern) and every shape occurs among both the base and the novel
classes, and a novel class is a new combination of seen attributes.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from restore.errors import ConfigError, DataError
from restore.world import lexicon as L
from restore.world.generator import WorldConfig, render, sample_scene, world_key
from restore.world.shifts import Shift

# Bump when anything that changes task pixels or splits changes; caches with another version regenerate.
TASK_FORMAT_VERSION = 1
IMAGE_SIZE = 48
# The random stream of a task's camera noise, apart from the generator's scene/caption/group streams (0-2).
_STREAM_CAMERA = 7
SPLITS = ("train", "val", "test")
_ATTRS = {"shape": L.SHAPES, "colour": L.COLOURS, "pattern": L.PATTERNS}


def _codes(group: tuple[L.Value, ...], names: tuple[str, ...]) -> list[int]:
    index = {v.name: i for i, v in enumerate(group)}
    return [index[n] for n in names]


def _checkerboard(rows: list[int], cols: list[int]) -> tuple[tuple[int, int], ...]:
    """Grid cells ordered so the first half (i + j even) and the second half each cover every row and column."""
    cells = [(i, j) for i in range(len(rows)) for j in range(len(cols))]
    ordered = [c for c in cells if sum(c) % 2 == 0] + [c for c in cells if sum(c) % 2 == 1]
    return tuple((rows[i], cols[j]) for i, j in ordered)


@dataclass(frozen=True)
class Task:
    name: str
    title: str  # the split file is split_world_<title>.json
    attributes: tuple[str, ...]  # attribute per class code position, e.g. ("colour", "shape")
    classes: tuple[tuple[int, ...], ...]  # codes per label
    seed: int
    counts: tuple[int, int, int] = (24, 8, 50)  # images per class in train, val, test
    description: str = ""
    shift: Shift = field(default_factory=Shift)  # the task's camera against pretraining's (none: the same)

    @property
    def classnames(self) -> list[str]:
        return [
            " ".join(_ATTRS[a][c].name for a, c in zip(self.attributes, codes, strict=True)) for codes in self.classes
        ]

    @property
    def split_file(self) -> str:
        return f"split_world_{self.title}.json"

    def folder(self, label: int) -> str:
        return self.classnames[label].replace(" ", "_")

    def _index(self, label: int, split: str, k: int) -> int:
        offset = {"train": 0, "val": self.counts[0], "test": self.counts[0] + self.counts[1]}[split]
        return label * 10_000 + offset + k

    def image_keys(self, labels_and_ks: list[tuple[int, int]], split: str) -> np.ndarray:
        """Per-image keys that seed the rendering shift's noise: a pure function of (task, split, label, k)."""
        return np.array(
            [world_key(self.seed, _STREAM_CAMERA, self._index(label, split, k)) for label, k in labels_and_ks],
            np.uint64,
        )

    def render(self, entries: list[tuple[int, int, object]], split: str) -> np.ndarray:
        """Pixels of (label, k, scene) entries of ``split``: the pretraining renderer, then the task's shift."""
        pixels = render([sc for _, _, sc in entries], IMAGE_SIZE)
        return self.shift.apply(pixels, self.image_keys([(label, k) for label, k, _ in entries], split))

    def scenes(self, split: str):
        """(label, k, scene) for every image of ``split``, in split-file order."""
        n = self.counts[SPLITS.index(split)]
        cfg = WorldConfig(image_size=IMAGE_SIZE)
        for label, codes in enumerate(self.classes):
            fixed = dict(zip(self.attributes, codes, strict=True))
            for k in range(n):
                yield label, k, sample_scene(self.seed, self._index(label, split, k), cfg, fixed=fixed)


# Base half first: warm, cool and grey colours alternate between the halves.
TINTED_ORDER = ("red", "yellow", "blue", "pink", "cyan", "gray", "orange", "green", "purple", "brown", "white", "black")


def _make_tasks() -> dict[str, Task]:
    shapes = tuple((i,) for i in range(len(L.SHAPES)))
    cs_colours = _codes(L.COLOURS, ("red", "orange", "yellow", "green", "blue", "purple"))
    cs_shapes = _codes(L.SHAPES, ("circle", "square", "triangle", "star", "heart", "cross"))
    ps_patterns = list(range(len(L.PATTERNS)))
    ps_shapes = _codes(L.SHAPES, ("circle", "square", "triangle", "diamond", "hexagon", "ring"))
    tinted = _codes(L.COLOURS, TINTED_ORDER)
    ts_shapes = _codes(L.SHAPES, ("circle", "square", "triangle"))
    tp_patterns = _codes(L.PATTERNS, ("solid", "striped", "dotted"))
    return {
        "shapes": Task(
            "shapes", "Shapes", ("shape",), shapes, seed=90_001, description="12 shapes; colour, pattern, size vary"
        ),
        "color_shape": Task(
            "color_shape",
            "ColorShape",
            ("colour", "shape"),
            _checkerboard(cs_colours, cs_shapes),
            seed=90_002,
            description="6 colours x 6 shapes; novel classes are unseen combinations of seen attributes",
        ),
        "pattern_shape": Task(
            "pattern_shape",
            "PatternShape",
            ("pattern", "shape"),
            _checkerboard(ps_patterns, ps_shapes),
            seed=90_003,
            description="5 patterns x 6 shapes; novel classes are unseen combinations of seen attributes",
        ),
        # The regime's tinted tasks: one camera whose colour filters turn every hue by 30 degrees, so the
        # colour words the text tower learned point at the wrong images while the image features still tell
        # the colours apart (measured: docs/world.md). Colours alternate between the base and the novel half,
        # so each half holds warm, cool and grey colours and a novel class is a colour never named in training.
        "tinted_colours": Task(
            "tinted_colours",
            "TintedColours",
            ("colour",),
            tuple((c,) for c in tinted),
            seed=90_004,
            description="12 colours through a camera that turns hues by -30 deg; novel classes are unseen colours",
            shift=Shift(hue=-30),
        ),
        "tinted_colour_shape": Task(
            "tinted_colour_shape",
            "TintedColourShape",
            ("colour", "shape"),
            tuple((c, sh) for c in tinted for sh in ts_shapes),
            seed=90_005,
            description="12 colours x 3 shapes through the -30 deg camera; novel classes have unseen colours",
            shift=Shift(hue=-30),
        ),
        "tinted_colour_pattern": Task(
            "tinted_colour_pattern",
            "TintedColourPattern",
            ("colour", "pattern"),
            tuple((c, p) for c in tinted for p in tp_patterns),
            seed=90_006,
            description="12 colours x 3 patterns through a +30 deg camera; novel classes have unseen colours",
            shift=Shift(hue=30),
        ),
    }


TASKS: dict[str, Task] = _make_tasks()
# The tasks pretraining evaluates as it goes (the model card's training table): drawn from its own renderer.
PROBES: tuple[str, ...] = ("shapes", "color_shape", "pattern_shape")
# The downstream regime (README, quickstart, docs/world.md): three tinted-camera tasks, where 16 shots close a
# distance the text tower cannot, and one task from pretraining's own renderer, where there is little to close.
REGIME: tuple[str, ...] = ("tinted_colours", "tinted_colour_shape", "tinted_colour_pattern", "pattern_shape")
ZERO_SHOT_TEMPLATE = "a photo of a {}."


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ConfigError(f"unknown world task {name!r}", hint=f"world tasks: {', '.join(TASKS)}")
    return TASKS[name]


def task_images(name: str, split: str = "test", limit_per_class: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, S, S, 3) uint8, labels (N,)) of a task split, rendered in memory (identical to the files)."""
    task = get_task(name)
    picked = [e for e in task.scenes(split) if limit_per_class is None or e[1] < limit_per_class]
    labels = np.array([label for label, _, _ in picked], dtype=np.int64)
    return task.render(picked, split), labels


def cache_root() -> Path:
    return Path(os.environ.get("RESTORE_CACHE", Path.home() / ".cache" / "restore")).expanduser()


def _manifest(task: Task) -> dict:
    return {
        "task": task.name,
        "format_version": TASK_FORMAT_VERSION,
        "image_size": IMAGE_SIZE,
        "counts": task.counts,
        "shift": task.shift.to_dict(),
    }


def _write(task: Task, out: Path) -> None:
    images_dir = out / "images"
    split_data: dict[str, list] = {}
    names = task.classnames
    for split in SPLITS:
        entries = list(task.scenes(split))
        pixels = task.render(entries, split)
        rows = []
        for (label, k, _), img in zip(entries, pixels, strict=True):
            rel = f"{task.folder(label)}/{split}_{k:04d}.png"
            path = images_dir / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(path, compress_level=1)
            rows.append([rel, label, names[label]])
        split_data[split] = rows
    (out / task.split_file).write_text(json.dumps(split_data))
    (out / "world_task.json").write_text(json.dumps(_manifest(task), indent=2))


def ensure_task(name: str, root: Path | str | None = None) -> Path:
    """The task's dataset folder, generating it on first use (or when the cached copy is stale or partial)."""
    task = get_task(name)
    base = Path(root) if root is not None else cache_root() / "world"
    target = base / task.name
    manifest = target / "world_task.json"
    if manifest.exists() and (target / task.split_file).exists():
        try:
            if json.loads(manifest.read_text()) == json.loads(json.dumps(_manifest(task))):
                return target
        except json.JSONDecodeError:
            pass
    try:
        base.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{task.name}-", dir=base))
    except OSError as e:
        raise DataError(f"cannot write the world task {name!r} under {base}: {e}", hint="set RESTORE_CACHE") from e
    try:
        _write(task, tmp)
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    except FileExistsError:  # another process finished first; its copy is identical
        shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
