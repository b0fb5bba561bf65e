"""Evaluation without training: a trained checkpoint on a dataset (`restore eval`), and zero-shot CLIP on a
registered dataset or a plain image folder (`restore zeroshot`)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from restore.clip.templates import check_template
from restore.data import DatasetSpec, Datum, get_dataset, get_protocol, load_dataset
from restore.data.folder import SPLIT_FILE, with_split_file
from restore.engine.backbone import check_backbone, load_backbone
from restore.engine.device import resolve_device
from restore.engine.evaluate import evaluate_splits
from restore.engine.plan import run_dataset
from restore.engine.precision import cast_for_precision
from restore.engine.progress import RunLog
from restore.engine.run_config import MAX_BATCH, MAX_WORKERS, resolve_precision
from restore.engine.run_dir import CONFIG_FILE, MODEL_FILE, read_run_config
from restore.errors import CheckpointError, ConfigError, DataError, RestoreError
from restore.methods import build_method, make_config
from restore.methods.model_file import load_method, read_method
from restore.options import short

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")


def check_loader_options(batch_size: Any, workers: Any) -> None:
    """The evaluation batch size and loader workers, checked before anything is loaded (the CLI passes them
    straight from its flags; a run's config checks its own with the same bounds)."""
    for flag, value, low, high, what in (
        ("--batch-size", batch_size, 1, MAX_BATCH, "images per evaluation step (default 100)"),
        ("--workers", workers, 0, MAX_WORKERS, "data-loader processes (0: load in the main process)"),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ConfigError(f"{flag} {short(value)} is not from {low} to {high}", hint=f"{flag}: {what}")


def test_splits(dataset: Any, root: str | Path, protocol: str, classes: str = "all") -> tuple[str, dict[str, Any]]:
    """(dataset title, {label: DatasetSplits}) whose test lists a protocol evaluates; no few-shot sampling.
    ``dataset``: a name, an image folder's path, or a spec."""
    spec = dataset if isinstance(dataset, DatasetSpec) else get_dataset(dataset)
    root = Path(root).expanduser()
    if spec.location is None and spec.generate is None and not root.is_dir():  # a folder or the world has its own
        raise DataError(f"data root {root} does not exist", hint="pass --root: the folder holding the dataset folders")
    if protocol == "train":
        return spec.title, {"test": load_dataset(spec, root, classes=classes)}  # type: ignore[arg-type]
    data = get_protocol(protocol).build(spec, root, shots=-1, seed=1, classes=classes)  # type: ignore[arg-type]
    return spec.title, data.evaluate


def _run_split(config: Any, run_dir: Path, dataset: str) -> Any:
    """A run tested on its own dataset is tested on the split it trained with: an image folder's recorded
    split.json, else the run's split settings (data.split_file, data.split_*); another dataset as it comes."""
    if config is None or not config.data.dataset:
        return dataset
    spec = get_dataset(dataset)
    try:
        own = get_dataset(config.data.dataset).name == spec.name
    except RestoreError:  # the run's dataset is gone (a deleted folder): not the one asked for
        own = False
    if not own:
        return dataset
    recorded = run_dir / SPLIT_FILE
    if spec.location is not None and recorded.is_file() and not config.data.split_file:
        return with_split_file(spec, recorded)
    return run_dataset(config)


def trained_on(checkpoint: str | Path) -> tuple[str, Path | None]:
    """(dataset, data root) a run trained on, for an evaluation that names no dataset."""
    path = Path(checkpoint).expanduser()
    run_dir = path if path.is_dir() else path.parent
    if not (run_dir / CONFIG_FILE).is_file():
        raise ConfigError(
            f"{run_dir} holds no {CONFIG_FILE}, so its dataset is unknown", hint="name the dataset with -d/--dataset"
        )
    data = read_run_config(run_dir).data
    return data.dataset, (Path(data.root) if data.root else None)


def evaluate_checkpoint(
    checkpoint: str | Path,
    *,
    dataset: str,
    root: str | Path,
    protocol: str = "train",
    backbone: str | None = None,
    device: str = "auto",
    precision: str = "auto",
    batch_size: int = 100,
    workers: int = 0,
    classes: str = "all",
    image_size: int | None = None,
    progress: bool | None = False,
    log: RunLog | None = None,
) -> dict[str, Any]:
    """Test a trained method on a dataset: ``checkpoint`` is a run directory or its ``model.safetensors``.

    ``protocol`` picks the splits: ``train``/``fewshot`` the whole test split, ``b2n`` base and novel,
    ``xd``/``dg`` every target. Returns ``{split: {"top1", "top5", "n"}}`` (and ``hm`` for b2n).
    """
    check_loader_options(batch_size, workers)
    path = Path(checkpoint).expanduser()
    model_file = path / MODEL_FILE if path.is_dir() else path
    if not model_file.is_file():
        raise CheckpointError(
            f"no trained model at {model_file}", hint="pass a finished run's directory or its model.safetensors"
        )
    run_dir = model_file.parent
    config = read_run_config(run_dir) if (run_dir / CONFIG_FILE).is_file() else None
    spec = backbone or (config.model.backbone if config is not None else None)
    if spec is None:
        raise ConfigError(
            f"{model_file} is not inside a run directory, so its backbone is unknown",
            hint="pass --backbone (the CLIP weights it was trained on)",
        )
    check_backbone(spec)
    dev = resolve_device(device)
    prec = resolve_precision(precision, dev.type)
    saved = read_method(model_file)  # a damaged checkpoint fails here, before data and backbone are loaded
    if config is not None and saved.method != config.method_name:
        # A model file copied into another run's directory would be evaluated with that run's settings.
        raise CheckpointError(
            f"{model_file} holds a {saved.method!r} model, but the run's {CONFIG_FILE} is a {config.method_name!r} run",
            hint="pass the model's own run directory, or the model file alone with --backbone",
        )
    _, splits = test_splits(_run_split(config, run_dir, dataset), root, protocol, classes)
    clip = load_backbone(spec, dev)
    method = cast_for_precision(load_method(model_file, clip).to(dev), prec)
    size = image_size or (config.data.image_size if config is not None else None) or clip.cfg.vision.image_size
    metrics, _ = evaluate_splits(
        method, splits, image_size=size, batch_size=batch_size, device=dev, precision=prec, workers=workers,
        log=log, progress=progress,
    )  # fmt: skip
    return metrics


def image_folder(folder: str | Path) -> tuple[list[str], list[Any]]:
    """(class names, Datum list) of ``<folder>/<class>/<image>``: classes are the sorted sub-folder names."""
    folder = Path(folder).expanduser().resolve()
    if not folder.is_dir():
        raise DataError(f"image folder {folder} does not exist", hint="lay it out as <folder>/<class>/*.jpg")
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    items = []
    for label, name in enumerate(classes):
        files = sorted(p for p in (folder / name).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        items += [Datum(path=p, label=label, classname=name) for p in files]
    if len(classes) < 2 or not items:
        raise DataError(
            f"{folder} has {len(classes)} class folders and {len(items)} images; zero-shot needs at least 2 classes",
            hint="lay the images out as <folder>/<class name>/*.jpg (the folder names are the class names)",
        )
    return classes, items


def zeroshot_eval(
    *,
    backbone: str,
    dataset: str | None = None,
    root: str | Path | None = None,
    images: str | Path | None = None,
    templates: str = "single",
    protocol: str = "train",
    device: str = "auto",
    precision: str = "auto",
    batch_size: int = 100,
    workers: int = 0,
    classes: str = "all",
    progress: bool | None = False,
    log: RunLog | None = None,
) -> dict[str, Any]:
    """Zero-shot CLIP accuracy on a registered dataset (``dataset`` + ``root``) or an image folder
    (``images``: ``<folder>/<class>/*.jpg``). ``templates``: single, ensemble, or a template with ``{}``."""
    if (images is None) == (dataset is None):
        raise ConfigError("give either a dataset (with --root) or an image folder (--images), not both or neither")
    check_loader_options(batch_size, workers)
    if "{" in templates or "}" in templates:
        check_template(templates)
    config = make_config("zeroshot", {"templates": templates})
    check_backbone(backbone)
    dev = resolve_device(device)
    prec = resolve_precision(precision, dev.type)
    if images is not None:
        names, items = image_folder(images)
        title, splits = None, {"images": SimpleNamespace(test=items, classnames=names)}
    else:
        if root is None:
            raise ConfigError("zero-shot on a dataset needs --root", hint="or set $RESTORE_DATA")
        title, splits = test_splits(dataset, root, protocol, classes)  # type: ignore[arg-type]
    clip = load_backbone(backbone, dev)
    first = next(iter(splits.values()))
    method = cast_for_precision(build_method(config, clip, first.classnames, title).to(dev), prec)
    metrics, _ = evaluate_splits(
        method, splits, image_size=clip.cfg.vision.image_size, batch_size=batch_size, device=dev, precision=prec,
        workers=workers, log=log, progress=progress,
    )  # fmt: skip
    return metrics
