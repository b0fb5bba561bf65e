"""The learning-rate schedule against torch's schedulers composed the way Dassl composes them."""

from __future__ import annotations

import math

import pytest
import torch
from torch.optim.lr_scheduler import CosineAnnealingLR, LRScheduler

from restore.engine.schedule import lr_at_epoch, schedule


class DasslConstantWarmup(LRScheduler):
    """Dassl's `ConstantWarmupScheduler` (dassl/optim/lr_scheduler.py), copied as the reference."""

    def __init__(self, optimizer, successor, warmup_epoch, cons_lr, last_epoch=-1):
        self.successor = successor
        self.warmup_epoch = warmup_epoch
        self.cons_lr = cons_lr
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        if self.last_epoch >= self.warmup_epoch:
            return self.successor.get_last_lr()
        return [self.cons_lr for _ in self.base_lrs]

    def step(self, epoch=None):
        if self.last_epoch >= self.warmup_epoch:
            self.successor.step(epoch)
            self._last_lr = self.successor.get_last_lr()
        else:
            super().step(epoch)


def dassl_lrs(lr: float, epochs: int, warmup: int, warmup_lr: float) -> list[float]:
    """The lr of each epoch as Dassl's trainer sees it: read before the epoch, step after it."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    cosine = CosineAnnealingLR(opt, T_max=epochs)
    sched = DasslConstantWarmup(opt, cosine, warmup, warmup_lr) if warmup > 0 else cosine
    out = []
    for _ in range(epochs):
        out.append(opt.param_groups[0]["lr"])
        opt.step()  # (no gradients: a no-op, in the order torch expects)
        sched.step()
    return out


@pytest.mark.parametrize(
    ("lr", "epochs", "warmup"),
    [(0.0035, 10, 1), (0.002, 5, 1), (0.0025, 20, 1), (0.01, 7, 2), (0.002, 4, 0), (0.1, 1, 0), (0.05, 3, 1)],
)
def test_matches_dassl_composition(lr, epochs, warmup):
    ours = schedule(lr=lr, epochs=epochs, warmup_epochs=warmup, warmup_lr=1e-5)
    ref = dassl_lrs(lr, epochs, warmup, 1e-5)
    assert ours == pytest.approx(ref, rel=1e-12, abs=1e-15)


def test_the_formula_of_the_brief():
    # epoch 0 at the warm-up lr; epoch e >= 1 at lr (1 + cos(pi (e - 1) / max_epoch)) / 2
    for e in range(10):
        expected = 1e-5 if e == 0 else 0.0035 * (1 + math.cos(math.pi * (e - 1) / 10)) / 2
        assert lr_at_epoch(e, lr=0.0035, epochs=10) == pytest.approx(expected, rel=1e-15)
    assert lr_at_epoch(1, lr=0.0035, epochs=10) == 0.0035  # the cosine starts at the full lr


def test_epochs_outside_the_run_are_refused():
    with pytest.raises(ValueError, match="outside"):
        lr_at_epoch(10, lr=0.1, epochs=10)
    with pytest.raises(ValueError, match="at least 1"):
        lr_at_epoch(0, lr=0.1, epochs=0)
