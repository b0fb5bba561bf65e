"""Classifying a user's own images with a trained run: which images, which class names, the probabilities.

A run's model is set up for its training classes; a user wants every class of the run's dataset (after
base-to-novel: base *and* novel) or names of their own. The run's classes are recorded in its
``metrics.json`` (``classnames``); runs written before that read them from the dataset's split file.
Images go through the run's own test preprocessing (``eval_transform`` at the run's image size), so a
48-pixel world model is never fed 224-pixel tensors.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from restore.data import load_dataset
from restore.data.images import DECODE_ERRORS, decode_image
from restore.data.registry import default_root_for
from restore.engine.device import autocast
from restore.engine.run_dir import METRICS_FILE
from restore.engine.standalone_eval import IMAGE_SUFFIXES
from restore.errors import ConfigError, DataError, RestoreError, RestoreWarning

MAX_CLASS_NAMES = 100_000


@dataclass
class Predictions:
    """Class probabilities of a batch of images: ``probs[i, c]`` for image ``sources[i]`` and ``classnames[c]``."""

    probs: torch.Tensor  # (N, C), each row sums to 1
    classnames: list[str]
    sources: list[str]  # a path, or "image 0", "image 1", ... for in-memory images

    def top(self, k: int = 5) -> list[list[tuple[str, float]]]:
        """Per image, the ``k`` most probable (class name, probability), best first."""
        k = max(1, min(k, len(self.classnames)))
        values, indices = self.probs.topk(k, dim=1)
        return [
            [(self.classnames[int(i)], float(v)) for v, i in zip(vs, ids, strict=True)]
            for vs, ids in zip(values, indices, strict=True)
        ]

    def labels(self) -> list[str]:
        """The most probable class name of each image."""
        return [row[0][0] for row in self.top(1)]

    def to_json(self, k: int = 5) -> list[dict[str, Any]]:
        return [
            {"image": s, "top": [{"class": c, "probability": p} for c, p in row]}
            for s, row in zip(self.sources, self.top(k), strict=True)
        ]


# --- which images ---------------------------------------------------------------------------------------
def image_files(inputs: Sequence[str | Path]) -> list[Path]:
    """The image files named by ``inputs``: files as given, folders searched (recursively, sorted) for files
    with an image suffix. A name that is neither, or a folder without images, is a DataError."""
    files: list[Path] = []
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise DataError(
                    f"folder {path} holds no image files", hint=f"image files end in {', '.join(IMAGE_SUFFIXES)}"
                )
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise DataError(f"no such image file or folder: {path}", hint="pass image files or folders of images")
    if not files:
        raise DataError("no images given", hint="pass image files or folders of images")
    return files


def open_images(images: Sequence[Any]) -> tuple[list[Image.Image], list[str]]:
    """(PIL images, how each is named) from paths or PIL images; a path that does not decode is a DataError."""
    opened: list[Image.Image] = []
    sources: list[str] = []
    for i, image in enumerate(images):
        if isinstance(image, Image.Image):
            opened.append(image)
            sources.append(f"image {i}")
            continue
        if not isinstance(image, str | Path):
            raise ConfigError(
                f"image {i} is a {type(image).__name__}, not a path or a PIL image",
                hint="pass file paths or PIL images; tensors go to `loaded.method.predict` after `loaded.preprocess`",
            )
        for path in image_files([image]):
            try:
                opened.append(decode_image(path))
            except DECODE_ERRORS as e:
                raise DataError(
                    f"cannot read image {path}: {e}", hint="pass image files Pillow can open (JPEG, PNG, ...)"
                ) from None
            sources.append(str(path))
    if not opened:
        raise DataError("no images given", hint="pass image files, folders of images or PIL images")
    return opened, sources


# --- which classes --------------------------------------------------------------------------------------
def parse_classes(text: str | None = None, file: str | Path | None = None) -> list[str] | None:
    """Class names from ``--classes "a,b,c"`` or ``--classes-file`` (one a line; blank lines and lines
    starting with # are skipped); None when neither is given."""
    if text is not None and file is not None:
        raise ConfigError("give --classes or --classes-file, not both")
    if file is not None:
        path = Path(file).expanduser()
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise DataError(f"cannot read the class file {path}: {e}", hint="one class name a line, UTF-8") from None
        names = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
        where = str(path)
    elif text is not None:
        names = [n.strip() for n in text.split(",") if n.strip()]
        where = "--classes"
    else:
        return None
    return check_classnames(names, where)


def check_classnames(names: Sequence[str], where: str = "classes") -> list[str]:
    names = [str(n) for n in names]
    if len(names) < 2:
        raise ConfigError(
            f"{where}: {len(names)} class name(s); classifying needs at least 2",
            hint='e.g. --classes "red circle,blue square"',
        )
    if len(names) > MAX_CLASS_NAMES:
        raise ConfigError(f"{where}: {len(names)} class names; at most {MAX_CLASS_NAMES}")
    seen: set[str] = set()
    dup = next((n for n in names if n in seen or seen.add(n)), None)  # type: ignore[func-returns-value]
    if dup is not None:
        raise ConfigError(f"{where}: class {dup!r} is listed twice", hint="give each class name once")
    return names


def run_classnames(run_dir: Path, config: Any, trained: Sequence[str]) -> list[str]:
    """Every class of the run's dataset (base and novel after base-to-novel): recorded in its metrics.json,
    else read from its dataset; the training classes (with a warning) when neither can be read."""
    try:
        recorded = json.loads((run_dir / METRICS_FILE).read_text()).get("classnames")
    except (OSError, ValueError, AttributeError):
        recorded = None
    if isinstance(recorded, list) and recorded and all(isinstance(n, str) for n in recorded):
        return recorded
    if config.protocol in ("train", "fewshot", "xd", "dg"):
        return list(trained)  # these runs train on all of their dataset's classes
    try:
        root = config.data.root or default_root_for(config.data.dataset)
        return list(load_dataset(config.data.dataset, Path(root), classes=config.data.classes).classnames)
    except (RestoreError, OSError) as e:  # the dataset is gone or moved: the trained classes, with a warning
        warnings.warn(
            f"{run_dir}: its classes are not recorded and its dataset cannot be read ({e}); using the "
            f"{len(trained)} classes it was trained on (pass --classes for others)",
            RestoreWarning,
            stacklevel=2,
        )
        return list(trained)


# --- classifying ----------------------------------------------------------------------------------------
@torch.no_grad()
def predict_images(
    method: Any,
    preprocess: Any,
    images: Sequence[Any],
    classnames: Sequence[str],
    *,
    batch_size: int = 32,
    precision: str = "fp32",
) -> Predictions:
    """Probabilities over ``classnames`` of each image (paths, folders or PIL images), preprocessed by
    ``preprocess``; ``method`` is set up for ``classnames`` first (and keeps them)."""
    names = check_classnames(classnames)
    if list(method.classnames) != names:
        method.set_classes(names)
    opened, sources = open_images(images)
    device = next(method.parameters()).device
    class_features = method.class_features()
    probs = []
    for start in range(0, len(opened), batch_size):
        batch = torch.stack([preprocess(im) for im in opened[start : start + batch_size]]).to(device)
        with autocast(device, precision):
            logits = method.predict(batch, class_features)
        probs.append(logits.float().softmax(dim=-1).cpu())
    return Predictions(torch.cat(probs), names, sources)
