"""The training loop: SGD over the method's learnable parameters only, Dassl's warm-up + cosine learning rate,
autocast on CUDA, a checkpoint after every epoch, and a resume that reproduces an uninterrupted run exactly.

Determinism: at the start of every epoch all generators (Python, NumPy, torch, the loader's shuffling and
worker seeds) are reseeded from (seed, epoch) — see `restore.engine.seeding` — so the state saved after epoch
k (learnable tensors, optimiser moments, the method's own training state) is all a resumed run needs.

Under torchrun (`restore.scale.distributed`) each rank loads its share of every global batch, the method is
wrapped in DistributedDataParallel, epoch statistics are summed over ranks, and only rank 0 writes the
checkpoint; a single-process run takes none of those paths.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from restore.engine.checkpointing import check_same_config, load_training_checkpoint, save_training_checkpoint
from restore.engine.device import autocast, grad_scaler
from restore.engine.progress import RunLog, TrainProgress
from restore.engine.schedule import lr_at_epoch
from restore.engine.seeding import (
    SampleSeeded,
    derive_seed,
    loader_generator,
    rng_state,
    seed_everything,
    set_rng_state,
    worker_init,
)
from restore.errors import TrainingError
from restore.methods import PromptedCLIP
from restore.scale import distributed


@dataclass
class TrainSettings:
    epochs: int
    lr: float
    batch_size: int
    seed: int = 1
    warmup_epochs: int = 1
    warmup_lr: float = 1e-5
    momentum: float = 0.9
    weight_decay: float = 5e-4
    workers: int = 0
    precision: str = "fp32"
    log_every: int = 20

    def lr_at(self, epoch: int) -> float:
        return lr_at_epoch(
            epoch, lr=self.lr, epochs=self.epochs, warmup_epochs=self.warmup_epochs, warmup_lr=self.warmup_lr
        )


@dataclass
class TrainResult:
    epochs: int
    steps: int
    history: list[dict[str, float]] = field(default_factory=list)  # one entry per epoch: loss, acc, lr, seconds
    train_s: float = 0.0  # seconds spent training in this process (not counting epochs done before a resume)
    resumed_from: int | None = None  # the epoch the run resumed after


def make_train_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    seed: int,
    epoch: int,
    workers: int,
    pin: bool = False,
    rank: int = 0,
    world: int = 1,
) -> DataLoader:
    """The loader of one epoch: shuffled by a generator seeded from (seed, epoch), each item's augmentation
    seeded from (seed, epoch, index). ``batch_size`` is the global batch; rank ``rank`` of ``world``
    processes loads its share of each (`restore.scale.distributed.GlobalBatchSampler`).

    Like Dassl, the last incomplete batch is dropped when there is at least one full batch.
    """
    generator = loader_generator(seed, epoch)
    sampler = distributed.GlobalBatchSampler(
        len(dataset),  # type: ignore[arg-type]
        batch_size,
        generator=generator,
        rank=rank,
        world=world,
    )
    return DataLoader(
        SampleSeeded(dataset, seed, epoch),
        batch_sampler=sampler,
        generator=generator,
        num_workers=workers,
        worker_init_fn=worker_init if workers > 0 else None,
        pin_memory=pin,
        persistent_workers=False,
    )


class Trainer:
    """Trains ``method`` on ``train_set`` (a torch Dataset of (image tensor, label)).

    ``checkpoint`` is where the per-epoch training checkpoint goes (None: no checkpoints); ``config_hash`` and
    ``identity`` (the run's settings) are stored in it and checked on resume.
    """

    def __init__(
        self,
        method: PromptedCLIP,
        train_set: Dataset,
        settings: TrainSettings,
        *,
        device: torch.device | str = "cpu",
        checkpoint: str | Path | None = None,
        config_hash: str = "",
        identity: dict[str, Any] | None = None,
        log: RunLog | None = None,
        progress: bool | None = None,
        on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
    ) -> None:
        self.method = method
        self.train_set = train_set
        self.s = settings
        self.device = torch.device(device)
        self.checkpoint = Path(checkpoint) if checkpoint is not None else None
        self.config_hash = config_hash
        self.identity = identity or {}
        self.log = log or RunLog(quiet=True)
        self.progress = TrainProgress(self.log, enabled=progress)
        self.on_epoch_end = on_epoch_end
        params = method.learnable_parameters()
        self.world = distributed.current()
        # The forward pass of training; DDP syncs the learnable parameters' gradients across ranks.
        self.model = distributed.wrap_ddp(method, self.device) if self.world is not None else method
        self.optimizer = torch.optim.SGD(
            params, lr=settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay
        )
        self.scaler = grad_scaler(self.device, settings.precision)
        self.history: list[dict[str, float]] = []
        self.epoch = 0  # epochs completed
        self.global_step = 0
        self._last_finite: tuple[int, float] | None = None

    # --- checkpoints ------------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "global_step": self.global_step,
            "config_hash": self.config_hash,
            "config": json.dumps(self.identity, sort_keys=True, default=str),
            "learnable": {k: v.detach().cpu() for k, v in self.method.learnable_state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else {},
            "schedule": {
                "next_epoch": self.epoch,
                "next_lr": self.s.lr_at(self.epoch) if self.epoch < self.s.epochs else 0.0,
            },
            "rng": rng_state(),
            "method_state": self.method.training_state(),
            "history": self.history,
        }

    def save(self) -> None:
        if self.checkpoint is not None and distributed.is_main():
            save_training_checkpoint(self.checkpoint, self.state())

    def resume(self) -> bool:
        """Continue from ``checkpoint`` when it exists; False when there is nothing to resume."""
        if self.checkpoint is None or not self.checkpoint.exists():
            return False
        state = load_training_checkpoint(self.checkpoint)
        check_same_config(state, self.config_hash, self.identity, self.checkpoint)
        self.method.load_learnable_state_dict({k: v.to(self.device) for k, v in state["learnable"].items()})
        self.optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler") and self.scaler.is_enabled():
            self.scaler.load_state_dict(state["scaler"])
        self.method.load_training_state(_to_device(state.get("method_state") or {}, self.device))
        set_rng_state(state["rng"])
        self.epoch = int(state["epoch"])
        self.global_step = int(state["global_step"])
        self.history = list(state.get("history") or [])
        return True

    # --- the loop ---------------------------------------------------------------------------------------
    def fit(self, *, resume: bool = False, until_epoch: int | None = None) -> TrainResult:
        """Train to the last epoch (or to ``until_epoch`` in this call; a later `fit` continues)."""
        s = self.s
        stop = s.epochs if until_epoch is None else min(until_epoch, s.epochs)
        resumed_from = None
        if resume and self.resume():
            resumed_from = self.epoch
            self.log.info(f"resumed from {self.checkpoint} after epoch {self.epoch}/{s.epochs}")
        n = len(self.train_set)  # type: ignore[arg-type]
        if n == 0:
            raise TrainingError("the training set is empty", hint="check the dataset, its classes and --shots")
        steps_per_epoch = n // s.batch_size if n >= s.batch_size else 1
        if self.world is not None and min(n, s.batch_size) < self.world.size:
            raise TrainingError(
                f"a global batch of {min(n, s.batch_size)} images cannot feed {self.world.size} processes",
                hint="use a batch size (and training set) of at least one image per process",
            )
        t0 = time.perf_counter()
        if self.epoch < s.epochs:
            self.log.info(
                f"training {self.method.name}: {n} images, {len(self.method.classnames)} classes, "
                f"{s.epochs} epochs x {steps_per_epoch} steps of {s.batch_size}, lr {s.lr} "
                f"(warm-up {s.warmup_epochs} at {s.warmup_lr}), {s.precision} on {self.device}",
                echo=False,
            )
        self.progress.start(s.epochs * steps_per_epoch, self.epoch * steps_per_epoch)
        try:
            while self.epoch < stop:
                summary = self._run_epoch(self.epoch, steps_per_epoch)
                self.epoch += 1
                self.method.end_epoch(self.epoch, s.epochs)
                self.history.append(summary)
                self.save()
                self.log.info(
                    f"epoch {self.epoch}/{s.epochs}: loss {summary['loss']:.4f} acc {summary['acc']:.2f}% "
                    f"lr {summary['lr']:.3e} ({summary['seconds']:.1f}s)",
                    echo=not self.progress.enabled,
                )
                if self.on_epoch_end is not None:
                    self.on_epoch_end(self.epoch, summary)
        finally:
            self.progress.stop()
        return TrainResult(
            epochs=self.epoch,
            steps=self.global_step,
            history=self.history,
            train_s=time.perf_counter() - t0,
            resumed_from=resumed_from,
        )

    def _run_epoch(self, epoch: int, steps_per_epoch: int) -> dict[str, float]:
        s = self.s
        seed_everything(derive_seed(s.seed, epoch, "epoch"))
        lr = s.lr_at(epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        rank, world = (self.world.rank, self.world.size) if self.world is not None else (0, 1)
        loader = make_train_loader(
            self.train_set, s.batch_size, seed=s.seed, epoch=epoch, workers=s.workers, pin=self.device.type == "cuda",
            rank=rank, world=world,
        )  # fmt: skip
        global_sizes = loader.batch_sampler.global_sizes()  # type: ignore[union-attr]
        self.method.train()
        self.progress.start_epoch(epoch + 1, s.epochs, steps_per_epoch, lr)
        t0 = time.perf_counter()
        loss_sum, correct, seen = 0.0, 0, 0
        for step, (images, labels) in enumerate(loader):
            images = images.to(self.device, non_blocking=True)
            labels = labels.to(self.device, non_blocking=True)
            if self.world is None:
                with autocast(self.device, s.precision):
                    out = self.method(images)
                    loss, logs = self.method.compute_loss(out, labels)
                value = local = float(loss.detach())
            else:
                loss, logs, out, value, local = self._distributed_step(images, labels, global_sizes[step])
            if not math.isfinite(value):
                self._non_finite(epoch, step, value, logs)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.global_step += 1
            self._last_finite = (self.global_step, value)
            b = labels.shape[0]
            loss_sum += local * b
            correct += int((out.logits.detach().argmax(-1) == labels).sum())
            seen += b
            acc = 100.0 * correct / seen
            self.progress.step(loss_sum / seen, acc, lr)
            if (step + 1) % s.log_every == 0:
                parts = " ".join(f"{k} {v:.4f}" for k, v in logs.items())
                self.log.info(
                    f"epoch {epoch + 1}/{s.epochs} step {step + 1}/{steps_per_epoch}: loss {value:.4f} ({parts}) "
                    f"acc {acc:.2f}% lr {lr:.3e}",
                    echo=False,
                )
        if self.world is not None:
            loss_sum, correct, seen = distributed.all_reduce_sum([loss_sum, correct, seen])
            correct, seen = int(correct), int(seen)
        return {
            "epoch": epoch + 1,
            "loss": loss_sum / max(seen, 1),
            "acc": 100.0 * correct / max(seen, 1),
            "lr": lr,
            "seconds": time.perf_counter() - t0,
            "images": seen,
        }

    def _distributed_step(
        self, images: torch.Tensor, labels: torch.Tensor, global_n: int
    ) -> tuple[torch.Tensor, dict[str, float], Any, float, float]:
        """Forward and loss of this rank's share of a global batch of ``global_n`` images.

        The loss is scaled by local_n * world / global_n: DDP averages the ranks' gradients, and that
        average is then the gradient of the global-batch loss. Returns the global loss value (the same on
        every rank, so a non-finite loss stops all of them at the same step) and this rank's unscaled loss
        (for the epoch statistics); the logs keep this rank's components.
        """
        assert self.world is not None
        with autocast(self.device, self.s.precision), distributed.global_batch(global_n):
            out = self.model(images)
            loss, logs = self.method.compute_loss(out, labels)
        local = float(loss.detach())
        loss = loss * (labels.shape[0] * self.world.size / global_n)
        (total,) = distributed.all_reduce_sum([float(loss.detach())])
        return loss, logs, out, total / self.world.size, local

    def _non_finite(self, epoch: int, step: int, value: float, logs: dict[str, float]) -> None:
        last = (
            f"the last finite loss was {self._last_finite[1]:.4f} at step {self._last_finite[0]}"
            if self._last_finite
            else "no step had a finite loss"
        )
        parts = ", ".join(f"{k}={v:.4g}" for k, v in logs.items())
        kept = (
            f"; the checkpoint of epoch {self.epoch} is kept at {self.checkpoint}"
            if self.checkpoint is not None and self.checkpoint.exists()
            else ""
        )
        message = (
            f"the loss became {value} at epoch {epoch + 1}, step {step + 1} (global step {self.global_step + 1}) "
            f"[{parts}]; {last}{kept}"
        )
        self.log.info(f"stopped: {message}", echo=False)
        raise TrainingError(
            message,
            hint="lower the learning rate (--set optim.lr=...), use model.precision=fp32 or bf16, or check the data",
        )


def _to_device(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {k: _to_device(v, device) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_to_device(v, device) for v in value)
    return value
