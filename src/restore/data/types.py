"""The two value types every data consumer sees: one labelled image, and a dataset's train/val/test lists."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from restore.errors import DataError


@dataclass(frozen=True)
class Datum:
    """One labelled image. `path` is absolute so a Datum means the same thing from any working directory."""

    path: Path
    label: int
    classname: str
    domain: int = 0


@dataclass
class DatasetSplits:
    """A dataset as a run sees it: class names indexed by label, and the three lists of images.

    `notes` records what loading dropped or assumed (classes dropped in `present` mode, where the split file was
    found, short classes in few-shot sampling), so a report can say exactly what a run trained on.
    `image_root` is the folder split-file paths are relative to (used to write portable few-shot caches).
    `parent_labels[i]`, when set, is label i's index in a parent label space (ImageNet-A/-R: their 200 classes
    in ImageNet's 1000), so an evaluator can score with either the subset or the full classifier.
    """

    name: str
    classnames: list[str]
    train: list[Datum]
    val: list[Datum]
    test: list[Datum]
    notes: list[str] = field(default_factory=list)
    image_root: Path | None = None
    parent_labels: list[int] | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classnames)

    def sizes(self) -> tuple[int, int, int]:
        return len(self.train), len(self.val), len(self.test)

    def subset_labels(
        self, labels: Iterable[int], *, name: str | None = None, note: str | None = None
    ) -> DatasetSplits:
        """Keep only `labels`, relabelled 0..k-1 in the order given (pass them sorted to keep label order)."""
        labels = list(labels)
        if len(set(labels)) != len(labels):
            raise DataError(f"subset_labels got repeated labels: {labels}")
        bad = [y for y in labels if not 0 <= y < self.num_classes]
        if bad:
            raise DataError(f"labels {bad} are outside 0..{self.num_classes - 1} of dataset {self.name!r}")
        relabel = {old: new for new, old in enumerate(labels)}

        def keep(items: Sequence[Datum]) -> list[Datum]:
            return [replace(d, label=relabel[d.label]) for d in items if d.label in relabel]

        return DatasetSplits(
            name=name or self.name,
            classnames=[self.classnames[y] for y in labels],
            train=keep(self.train),
            val=keep(self.val),
            test=keep(self.test),
            notes=[*self.notes, *([note] if note else [])],
            image_root=self.image_root,
            parent_labels=None if self.parent_labels is None else [self.parent_labels[y] for y in labels],
        )

    def with_lists(
        self, *, train: list[Datum] | None = None, val: list[Datum] | None = None, note: str | None = None
    ) -> DatasetSplits:
        """A copy with train and/or val replaced (what few-shot sampling produces)."""
        return replace(
            self,
            train=self.train if train is None else train,
            val=self.val if val is None else val,
            notes=[*self.notes, *([note] if note else [])],
        )

    def class_counts(self) -> dict[str, list[int]]:
        """Images per label for each split, e.g. {"train": [16, 16, ...], ...}."""
        out = {}
        for split, items in (("train", self.train), ("val", self.val), ("test", self.test)):
            counts = [0] * self.num_classes
            for d in items:
                counts[d.label] += 1
            out[split] = counts
        return out
