"""Evaluation protocols as data: what a run trains on and which splits it is tested on.

Every protocol answers one call, `build(dataset, root, shots=, seed=)`, with a `ProtocolData`: the training
`DatasetSplits` (few-shot train/val) and a dict `{label: DatasetSplits}` whose `.test` lists a run evaluates.
A training engine can drive all four without knowing which one it has.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from restore.data.builtin import DG_TARGETS, XD_TARGETS
from restore.data.fewshot import few_shot
from restore.data.load import ClassesMode, load_dataset
from restore.data.registry import DatasetSpec, get_dataset, normalise
from restore.data.types import DatasetSplits
from restore.errors import ConfigError, DataError

FEWSHOT_SHOTS = (1, 2, 4, 8, 16)


def base_class_count(n: int) -> int:
    """How many of ``n`` classes are base in base-to-novel: labels 0..ceil(n/2)-1 (CoOp's split)."""
    return math.ceil(n / 2)


def base_to_novel(splits: DatasetSplits) -> tuple[DatasetSplits, DatasetSplits]:
    """Labels 0..ceil(n/2)-1 are base, the rest novel; each relabelled from 0, train/val/test all kept."""
    n = splits.num_classes
    if n < 2:
        raise ConfigError(f"{splits.name} has {n} class; base-to-novel needs at least 2")
    m = base_class_count(n)
    base = splits.subset_labels(range(m), note=f"base-to-novel: base classes = labels 0..{m - 1} of {n}")
    novel = splits.subset_labels(range(m, n), note=f"base-to-novel: novel classes = labels {m}..{n - 1} of {n}")
    return base, novel


@dataclass
class ProtocolData:
    """What to train on (`train.train`, `train.val`) and what to test (`evaluate[label].test`)."""

    protocol: str
    train: DatasetSplits
    evaluate: dict[str, DatasetSplits]
    notes: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # xd/dg: target -> why it is not evaluated

    def check(self, *, training: bool = True) -> None:
        """Every split the run will use has images: checked before the first step, so a split file without
        its test list fails now, not after the whole training schedule (and leaves no run behind)."""
        if training and not self.train.train:
            raise DataError(
                f"{self.train.name}: the training split has no images (protocol {self.protocol})",
                hint="the split file's 'train' list must list images of the training classes",
            )
        for label, splits in self.evaluate.items():
            if not splits.test:
                raise DataError(
                    f"{splits.name}: the {label} test split has no images (protocol {self.protocol})",
                    hint="the split file's 'test' list must list images of every class the protocol tests",
                )


class Protocol(ABC):
    """A protocol: dataset name(s), root, shots and seed in; training splits and evaluation splits out."""

    name: ClassVar[str]

    @abstractmethod
    def build(
        self,
        dataset: str | DatasetSpec | None,
        root: str | Path,
        *,
        shots: int = 16,
        seed: int = 1,
        classes: ClassesMode = "all",
        cache_dir: Path | None = None,
        strict: bool = False,
    ) -> ProtocolData: ...

    @abstractmethod
    def eval_labels(self, dataset: str | None = None) -> list[str]:
        """The keys of `evaluate`, known without touching the disk (for planning sweeps and reports)."""

    def _train(self, dataset: DatasetSpec, root, shots, seed, classes, cache_dir, strict=False) -> DatasetSplits:
        """`strict`: a class with fewer than `shots` training images is an error (default: all are taken)."""
        return few_shot(load_dataset(dataset, root, classes=classes), shots, seed, cache_dir=cache_dir, strict=strict)


def _why(e: DataError) -> str:
    """A missing target's reason on one line (its layout and download hints are for a run that needs it)."""
    return e.message.splitlines()[0].split("; expected under")[0].rstrip(":")


def _spec(dataset: str | DatasetSpec) -> DatasetSpec:
    return dataset if isinstance(dataset, DatasetSpec) else get_dataset(dataset)


def _need(dataset: str | DatasetSpec | None, protocol: str) -> DatasetSpec:
    if not dataset:
        raise ConfigError(f"the {protocol} protocol needs a dataset name")
    spec = _spec(dataset)
    if spec.test_only:
        raise ConfigError(f"{spec.name!r} is a test-only dataset and cannot be trained on")
    return spec


class BaseToNovel(Protocol):
    """Train on the base half of the classes; test base and novel classes separately."""

    name = "b2n"

    def build(self, dataset, root, *, shots=16, seed=1, classes="all", cache_dir=None, strict=False) -> ProtocolData:
        name = _need(dataset, self.name)
        # CoOp's order: few-shot sampling over all classes first, then the base/novel split.
        base, novel = base_to_novel(self._train(name, root, shots, seed, classes, cache_dir, strict))
        return ProtocolData(self.name, base, {"base": base, "novel": novel})

    def eval_labels(self, dataset=None) -> list[str]:
        return ["base", "novel"]


class FewShot(Protocol):
    """Train and test on all classes with `shots` images per class (1, 2, 4, 8, 16 in the papers)."""

    name = "fewshot"

    def build(self, dataset, root, *, shots=16, seed=1, classes="all", cache_dir=None, strict=False) -> ProtocolData:
        name = _need(dataset, self.name)
        train = self._train(name, root, shots, seed, classes, cache_dir, strict)
        return ProtocolData(self.name, train, {"all": train})

    def eval_labels(self, dataset=None) -> list[str]:
        return ["all"]


class _TransferProtocol(Protocol):
    """Train on a source dataset (all classes), test on the source and on each target's full test set."""

    default_targets: ClassVar[tuple[str, ...]]

    def __init__(self, source: str = "imagenet", targets: Sequence[str | DatasetSpec] | None = None) -> None:
        """`targets`: registered names, image folders or specs; None or empty: the paper's list."""
        self.source = get_dataset(source).name
        self.target_specs: list[DatasetSpec] = []
        self.unavailable: dict[str, str] = {}  # an image folder that is not there: skipped like missing data
        for t in targets or self.default_targets:
            try:
                self.target_specs.append(_spec(t))
            except DataError as e:
                self.unavailable[str(t)] = _why(e)
        self.targets = [*(t.name for t in self.target_specs), *self.unavailable]

    def build(self, dataset, root, *, shots=16, seed=1, classes="all", cache_dir=None, strict=False) -> ProtocolData:
        """A target whose data cannot be loaded is skipped (`skipped` says why); none loading is an error."""
        source = _need(dataset or self.source, self.name)
        train = self._train(source, root, shots, seed, classes, cache_dir, strict)
        evaluate = {source.name: train}
        skipped = dict(self.unavailable)
        for t in self.target_specs:
            if t.name == source.name:
                continue
            try:
                evaluate[t.name] = load_dataset(t, root, classes=classes)
            except DataError as e:
                skipped[t.name] = _why(e)
        if skipped and len(evaluate) == 1:
            raise DataError(
                f"{self.name}: none of the {len(skipped)} targets can be evaluated:\n"
                + "\n".join(f"  {t}: {why}" for t, why in skipped.items()),
                hint="put the target datasets under the data root (`restore data download NAME`), or choose "
                "targets that are there with --target NAME (repeatable)",
            )
        return ProtocolData(self.name, train, evaluate, skipped=skipped)

    def eval_labels(self, dataset=None) -> list[str]:
        source = get_dataset(dataset).name if dataset else self.source
        return [source, *[t for t in self.targets if t != source]]


class CrossDataset(_TransferProtocol):
    """Train on ImageNet (16 shots, 1000 classes), test on the 10 other datasets."""

    name = "xd"
    default_targets = XD_TARGETS


class DomainGeneralisation(_TransferProtocol):
    """Train on ImageNet, test on ImageNet-V2, -Sketch, -A and -R (A and R: their 200-class subsets)."""

    name = "dg"
    default_targets = DG_TARGETS


_PROTOCOLS: dict[str, type[Protocol]] = {
    "b2n": BaseToNovel,
    "base2novel": BaseToNovel,
    "basetonovel": BaseToNovel,
    "base2new": BaseToNovel,
    "xd": CrossDataset,
    "crossdataset": CrossDataset,
    "dg": DomainGeneralisation,
    "domaingeneralisation": DomainGeneralisation,
    "domaingeneralization": DomainGeneralisation,
    "fewshot": FewShot,
    "fs": FewShot,
}


def get_protocol(name: str, **options) -> Protocol:
    """A protocol by name ('b2n', 'xd', 'dg', 'fewshot' and spellings like 'base2novel', 'cross_dataset')."""
    cls = _PROTOCOLS.get(normalise(name))
    if cls is None:
        raise ConfigError(f"unknown protocol {name!r}", hint="known protocols: b2n (base2novel), xd, dg, fewshot")
    try:
        return cls(**options)
    except TypeError as e:
        raise ConfigError(f"protocol {name!r}: {e}") from None
