"""Evaluation of a trained method: `evaluate_splits` tests it on each split of a protocol (what a run,
`restore eval` and `restore analyze` use); `evaluate` is one split: class features once, then top-1/top-5.

In a distributed run (`restore.distributed`) each rank evaluates a contiguous shard of the split and
the hit counts are summed over ranks, so every rank returns the numbers of the whole split.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch.utils.data import Dataset, Subset

from restore import distributed
from restore.clip.text_classifier import topk_correct
from restore.data import ImageDataset, eval_transform, get_dataset
from restore.data.batches import ImageLoader
from restore.engine.device import autocast
from restore.engine.progress import EvalProgress, RunLog
from restore.engine.seeding import worker_init
from restore.errors import ConfigError, DataError
from restore.methods import PromptedCLIP
from restore.results.records import harmonic_mean


def dataset_title(name: str | None) -> str | None:
    """The CoOp class name of a registry dataset (``dtd`` -> ``DescribableTextures``), None if unregistered."""
    if name is None:
        return None
    try:
        return get_dataset(name).title
    except ConfigError:
        return None


@torch.no_grad()
def evaluate(
    method: PromptedCLIP,
    dataset: Dataset,
    classnames: Sequence[str],
    *,
    batch_size: int = 100,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    workers: int = 0,
    label: str = "test",
    dataset_name: str | None = None,
    log: RunLog | None = None,
    progress: bool | None = None,
) -> dict[str, Any]:
    """``{"top1": %, "top5": %, "n": images}`` of ``method`` on ``dataset`` labelled over ``classnames``.

    The class texts are encoded once (``method.class_features()``) unless the method's text depends on the
    image (CoCoOp), which `predict` then handles per batch. ``dataset_name`` (the CoOp name of the test
    set's dataset) lets per-dataset text follow it, e.g. zero-shot's template on a cross-dataset target.
    """
    n = len(dataset)  # type: ignore[arg-type]
    if n == 0:
        raise DataError(f"the {label} split has no images", hint="check the dataset and its classes")
    device = torch.device(device)
    log = log or RunLog(quiet=True)
    bar = EvalProgress(log, enabled=progress)
    t0 = time.perf_counter()
    method.eval()
    method.set_classes(list(classnames), dataset=dataset_name)
    world = distributed.current()
    if world is not None:  # this rank's contiguous shard
        q, r = divmod(n, world.size)
        start = world.rank * q + min(world.rank, r)
        dataset = Subset(dataset, range(start, start + q + (1 if world.rank < r else 0)))
    loader = ImageLoader(  # a DataError from a loader worker reads as if raised here
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        worker_init_fn=worker_init if workers > 0 else None,
        pin_memory=device.type == "cuda",
    )
    k5 = min(5, len(classnames))
    hits = {1: 0, k5: 0}
    seen = 0
    bar.start(label, len(loader))
    try:
        with autocast(device, precision):
            class_features = method.class_features()
            for images, labels in loader:
                images = images.to(device, non_blocking=True)
                labels = labels.to(device, non_blocking=True)
                logits = method.predict(images, class_features).float()
                for k, v in topk_correct(logits, labels, (1, k5)).items():
                    hits[k] += v
                seen += labels.shape[0]
                bar.advance()
    finally:
        bar.stop()
    if world is not None:
        hits[1], hits[k5], seen = (int(v) for v in distributed.all_reduce_sum([hits[1], hits[k5], seen]))
    result = {
        "top1": 100.0 * hits[1] / seen,
        "top5": 100.0 * hits[k5] / seen,
        "n": seen,
        "classes": len(classnames),
        "seconds": time.perf_counter() - t0,
    }
    log.info(f"eval {label}: top-1 {result['top1']:.2f}%  top-5 {result['top5']:.2f}%  ({seen} images)")
    return result


def evaluate_splits(
    method: PromptedCLIP,
    splits: Mapping[str, Any],
    *,
    image_size: int,
    batch_size: int = 100,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    workers: int = 0,
    on_corrupt: str = "error",
    log: RunLog | None = None,
    progress: bool | None = None,
) -> tuple[dict[str, Any], int]:
    """``({label: {"top1", "top5", "n"}, ["hm"]}, images skipped)`` of ``method`` on each of ``splits`` (label ->
    a split with ``classnames``, ``test`` items and the dataset ``name``); HM when base and novel are both
    there. Skipped counts unreadable images left out under ``on_corrupt="skip"``."""
    transform = eval_transform(image_size)
    metrics: dict[str, Any] = {}
    skipped = 0
    for label, split in splits.items():
        test_set = ImageDataset(split.test, transform, on_corrupt=on_corrupt)
        skipped += len(getattr(test_set, "skipped", []))
        r = evaluate(
            method, test_set, split.classnames, batch_size=batch_size, device=device, precision=precision,
            workers=workers, label=label, dataset_name=dataset_title(getattr(split, "name", None)), log=log,
            progress=progress,
        )  # fmt: skip
        metrics[label] = {"top1": r["top1"], "top5": r["top5"], "n": r["n"]}
    if "base" in metrics and "novel" in metrics:
        metrics["hm"] = harmonic_mean(metrics["base"]["top1"], metrics["novel"]["top1"])
    return metrics, skipped
