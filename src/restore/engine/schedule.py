"""The learning rate of each epoch: Dassl's `ConstantWarmupScheduler` around `CosineAnnealingLR(T_max=epochs)`.

Dassl steps its scheduler once per epoch, so the whole schedule is a pure function of the epoch. Writing it
so (instead of keeping a scheduler object) makes a resumed run's learning rate exact by construction.
"""

from __future__ import annotations

import math


def lr_at_epoch(epoch: int, *, lr: float, epochs: int, warmup_epochs: int = 1, warmup_lr: float = 1e-5) -> float:
    """Learning rate of 0-based ``epoch``: ``warmup_lr`` for the first ``warmup_epochs``, then a cosine from
    ``lr`` whose period is the full ``epochs`` (as Dassl: T_max = max_epoch, counted from the warm-up's end).

    Epoch e >= w runs at ``lr * (1 + cos(pi * (e - w) / epochs)) / 2``.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    if not 0 <= epoch < epochs:
        raise ValueError(f"epoch {epoch} is outside 0..{epochs - 1}")
    if epoch < warmup_epochs:
        return warmup_lr
    return lr * (1.0 + math.cos(math.pi * (epoch - warmup_epochs) / epochs)) / 2.0


def schedule(*, lr: float, epochs: int, warmup_epochs: int = 1, warmup_lr: float = 1e-5) -> list[float]:
    """The learning rate of every epoch (what `restore train` logs up front)."""
    kw = {"lr": lr, "epochs": epochs, "warmup_epochs": warmup_epochs, "warmup_lr": warmup_lr}
    return [lr_at_epoch(e, **kw) for e in range(epochs)]
