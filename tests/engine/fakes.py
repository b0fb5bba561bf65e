"""Tiny generated datasets and run settings shared by the engine, CLI and API tests."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import Dataset

# Settings every test run shares: the tiny random backbone, no loader workers, few epochs.
TINY = {
    "model.backbone": "random:tiny",
    "data.workers": 0,
    "data.eval_batch_size": 16,
    "quiet": True,
}


def make_tree(root: Path, *, num_classes: int = 6, per_class: tuple[int, int, int] = (8, 2, 4), seed: int = 0) -> Path:
    """A generated DTD in its real layout (32 px images: the tiny CLIP's input size)."""
    from restore.data.fake import make_dataset_tree

    make_dataset_tree(root, "dtd", num_classes=num_classes, per_class=per_class, size=32, seed=seed)
    return root


class Blobs(Dataset):
    """In-memory (image, label) pairs whose mean colour depends on the label: learnable, no disk."""

    def __init__(self, n: int = 48, classes: int = 6, size: int = 32, seed: int = 0, nan_at: int | None = None):
        g = torch.Generator().manual_seed(seed)
        self.labels = torch.arange(n) % classes
        self.images = torch.randn(n, 3, size, size, generator=g) * 0.5
        self.images += (self.labels.float()[:, None, None, None] - classes / 2) * 0.3
        self.nan_at = nan_at

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        image = self.images[i]
        if self.nan_at is not None and i == self.nan_at:
            image = torch.full_like(image, float("nan"))
        # A draw from the global generator, as a random augmentation would make: resume must replay it.
        return image + 0.01 * torch.randn(image.shape), self.labels[i]
