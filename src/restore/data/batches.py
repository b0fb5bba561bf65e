"""A torch Dataset over `Datum` lists and a seeded DataLoader factory.

A corrupt image stops a run with a DataError naming the file, also from worker processes (torch re-raises a
worker's exception with the traceback pasted into its message; the loader here restores the original message).
`on_corrupt="skip"` checks every image once up front and leaves the bad ones out, keeping them in `.skipped`,
so a run that trains on fewer images than the split lists can always say how many and which.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from restore.data.images import find_bad_images, open_image
from restore.data.types import Datum
from restore.errors import ConfigError, DataError

OnCorrupt = Literal["error", "skip"]


class ImageDataset(Dataset):
    """(transformed image, label) for each Datum.

    With `on_corrupt="skip"`, construction decodes every image once (threads) and drops the missing or corrupt
    ones; `skipped` lists them with the reason and `notes` says how many, for the run's record.
    """

    def __init__(
        self,
        items: Sequence[Datum],
        transform: Callable[[Any], Any] | None = None,
        *,
        on_corrupt: OnCorrupt = "error",
        check_workers: int = 4,
    ) -> None:
        if on_corrupt not in ("error", "skip"):
            raise ConfigError(f"on_corrupt must be 'error' or 'skip', got {on_corrupt!r}")
        self.items = list(items)
        self.listed = len(self.items)
        self.transform = transform
        self.on_corrupt = on_corrupt
        self.skipped: list[tuple[Path, str]] = []
        if on_corrupt == "skip":
            self.skipped = find_bad_images(sorted({d.path for d in self.items}), workers=check_workers)
            bad = {p for p, _ in self.skipped}
            self.items = [d for d in self.items if d.path not in bad]

    @property
    def notes(self) -> list[str]:
        if not self.skipped:
            return []
        return [f"skipped {self.listed - len(self.items)} of {self.listed} images ({len(self.skipped)} bad files)"]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        d = self.items[index]
        image = open_image(d.path)
        return (self.transform(image) if self.transform is not None else image), d.label


def seed_worker(worker_id: int) -> None:
    """Seed `random` and numpy in each worker from torch's per-worker seed (itself drawn from the loader's
    generator), so augmentations that use them are reproducible too."""
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


class _CleanErrors:
    """Iterator wrapper: a DataError re-raised from a worker gets back its own message and hint."""

    def __init__(self, it: Iterator) -> None:
        self._it = it

    def __iter__(self) -> _CleanErrors:
        return self

    def __len__(self) -> int:
        return len(self._it)  # type: ignore[arg-type]

    def __next__(self) -> Any:
        try:
            return next(self._it)
        except StopIteration:
            raise
        except BaseException as e:
            # Stop the workers now: left to garbage collection after an error, torch's shutdown of an
            # interrupted iterator waits ~5 s per worker before terminating it.
            shutdown = getattr(self._it, "_shutdown_workers", None)
            if shutdown is not None:
                shutdown()
            if isinstance(e, DataError) and "Original Traceback" in e.message:
                raise unwrap_worker_error(e.message) from None
            raise


def unwrap_worker_error(text: str) -> DataError:
    """The DataError a worker raised, recovered from torch's 'Caught DataError in DataLoader worker...' text."""
    marker = "DataError: "
    body = text[text.rfind(marker) + len(marker) :].rstrip("\n") if marker in text else text
    message, _, hint = body.partition("\n  hint: ")
    return DataError(f"{message} (in a data-loader worker)", hint=hint or None)


class ImageLoader(DataLoader):
    """A DataLoader whose worker errors read like the same error raised in the main process."""

    def __iter__(self) -> Iterator:  # type: ignore[override]
        return _CleanErrors(super().__iter__())


def make_loader(
    items: Sequence[Datum] | ImageDataset,
    transform: Callable[[Any], Any] | None,
    batch_size: int,
    *,
    shuffle: bool,
    workers: int,
    seed: int,
    drop_last: bool = False,
    sampler: Sampler | None = None,
    on_corrupt: OnCorrupt = "error",
    pin_memory: bool = False,
    persistent_workers: bool = False,
) -> ImageLoader:
    """A loader whose order and augmentations follow `seed`: shuffling draws from a seeded torch.Generator and
    each worker is seeded from it, so the same seed and worker count give the same batches.

    `items` may also be an ImageDataset (e.g. one built with on_corrupt="skip", whose `skipped` a run records);
    a non-None `transform` then replaces its transform. With workers=0 the augmentations draw from the main
    process's torch generator, which the caller seeds.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    if workers < 0:
        raise ConfigError(f"workers must be 0 or more, got {workers}")
    if sampler is not None and shuffle:
        raise ConfigError("pass either shuffle=True or a sampler, not both", hint="a sampler decides the order itself")
    dataset = items if isinstance(items, ImageDataset) else ImageDataset(items, transform, on_corrupt=on_corrupt)
    if isinstance(items, ImageDataset) and transform is not None:
        dataset.transform = transform
    generator = torch.Generator().manual_seed(seed)
    return ImageLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle if sampler is None else False,
        sampler=sampler,
        num_workers=workers,
        drop_last=drop_last,
        generator=generator,
        worker_init_fn=seed_worker if workers > 0 else None,
        pin_memory=pin_memory,
        persistent_workers=persistent_workers and workers > 0,
    )
