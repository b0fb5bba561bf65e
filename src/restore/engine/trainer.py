"""The training loop: SGD over the method's learnable parameters only, Dassl's warm-up + cosine learning rate,
the run's precision on CUDA (autocast, or the half weights of fp16: restore.engine.precision), a checkpoint
after every epoch, and a resume that reproduces an uninterrupted run exactly.

Determinism: at the start of every epoch all generators (Python, NumPy, torch, the loader's shuffling and
worker seeds) are reseeded from (seed, epoch) — see `restore.engine.seeding` — so the state saved after epoch
k (learnable tensors, optimiser moments, the method's own training state) is all a resumed run needs.

Ctrl-C (SIGINT) while training finishes the step in progress, saves a checkpoint of exactly that point (the
step within the epoch, the epoch's running sums and every generator's state; each image's augmentation is
seeded from its index, so the rest of the epoch needs nothing else) and raises KeyboardInterrupt; a resume
continues from that step to the result of an uninterrupted run. A second Ctrl-C stops at once.

Under torchrun (`restore.distributed`) each rank loads its share of every global batch, the method is
wrapped in DistributedDataParallel, epoch statistics are summed over ranks, and only rank 0 writes the
checkpoint; a single-process run takes none of those paths.
"""

from __future__ import annotations

import itertools
import json
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from restore import distributed
from restore.data.batches import ImageLoader
from restore.engine.device import autocast, grad_scaler
from restore.engine.progress import RunLog, TrainProgress
from restore.engine.schedule import lr_at_epoch
from restore.engine.seeding import (
    SampleSeeded,
    derive_seed,
    deterministic_kernels,
    loader_generator,
    rng_state,
    seed_everything,
    set_rng_state,
    worker_init,
)
from restore.engine.tracking import Tracker, Trackers
from restore.engine.train_checkpoint import check_same_config, load_training_checkpoint, save_training_checkpoint
from restore.errors import CheckpointError, TrainingError
from restore.methods import PromptedCLIP


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
    skip: int = 0,
) -> DataLoader:
    """The loader of one epoch: shuffled by a generator seeded from (seed, epoch), each item's augmentation
    seeded from (seed, epoch, index). ``batch_size`` is the global batch; rank ``rank`` of ``world``
    processes loads its share of each (`restore.distributed.GlobalBatchSampler`).

    Like Dassl, the last incomplete batch is dropped when there is at least one full batch. ``skip`` leaves
    out the epoch's first batches (a resume inside the epoch); the batches after them are unchanged. A
    DataError raised in a loader worker reads as if raised here (`restore.data.batches.ImageLoader`).
    """
    generator = loader_generator(seed, epoch)
    sampler = distributed.GlobalBatchSampler(
        len(dataset),  # type: ignore[arg-type]
        batch_size,
        generator=generator,
        rank=rank,
        world=world,
    )
    return ImageLoader(
        SampleSeeded(dataset, seed, epoch),
        batch_sampler=_Skip(sampler, skip) if skip else sampler,
        generator=generator,
        num_workers=workers,
        worker_init_fn=worker_init if workers > 0 else None,
        pin_memory=pin,
        persistent_workers=False,
    )


class _Skip(Sampler[list[int]]):
    """A batch sampler without its first ``skip`` batches (what a resume inside an epoch has trained on)."""

    def __init__(self, sampler: Any, skip: int) -> None:
        self.sampler, self.skip = sampler, skip

    def global_sizes(self) -> list[int]:
        return self.sampler.global_sizes()[self.skip :]

    def __iter__(self) -> Iterator[list[int]]:
        return itertools.islice(iter(self.sampler), self.skip, None)

    def __len__(self) -> int:
        return max(0, len(self.sampler) - self.skip)


class _CtrlC:
    """While installed (main thread only): the first SIGINT asks the trainer to stop after the current step,
    the second raises KeyboardInterrupt at once. `uninstall` puts the previous handler back."""

    def __init__(self, log: RunLog) -> None:
        self.log = log
        self.requested = False
        self._previous: Any = None

    def install(self) -> _CtrlC:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def uninstall(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self.log.console.print(
            "interrupt: saving a checkpoint after this step (Ctrl-C again to stop at once)", markup=False
        )


class Trainer:
    """Trains ``method`` on ``train_set`` (a torch Dataset of (image tensor, label)).

    ``checkpoint`` is where the per-epoch training checkpoint goes (None: no checkpoints); ``config_hash`` and
    ``identity`` (the run's settings) are stored in it and checked on resume. ``tracker`` receives every
    step's scalars (`restore.engine.tracking`); its owner closes it.
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
        tracker: Tracker | None = None,
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
        self.tracker = tracker if tracker is not None else Trackers([])
        self._tracking = False  # tracker.begin called (once: a later `fit` continues the same files)
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
        self.epoch_step = 0  # steps of the next epoch already done (a checkpoint saved on Ctrl-C)
        self._partial: dict[str, float] = {}  # that epoch's running sums so far
        self._ctrl_c: _CtrlC | None = None
        self.global_step = 0
        self._last_finite: tuple[int, float] | None = None

    # --- checkpoints ------------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "epoch_step": self.epoch_step,
            "partial": dict(self._partial),
            "global_step": self.global_step,
            "config_hash": self.config_hash,
            "config": json.dumps(self.identity, sort_keys=True, default=str),
            "precision": self.s.precision,
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
        self.tracker.flush()  # every step the checkpoint holds is stored: a resume continues after it
        if self.checkpoint is not None and distributed.is_main():
            save_training_checkpoint(self.checkpoint, self.state())

    def resume(self) -> bool:
        """Continue from ``checkpoint`` when it exists; False when there is nothing to resume."""
        if self.checkpoint is None or not self.checkpoint.exists():
            return False
        state = load_training_checkpoint(self.checkpoint)
        check_same_config(state, self.config_hash, self.identity, self.checkpoint)
        check_same_precision(state, self.s.precision, self.checkpoint)
        self.method.load_learnable_state_dict({k: v.to(self.device) for k, v in state["learnable"].items()})
        self.optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler") and self.scaler.is_enabled():
            self.scaler.load_state_dict(state["scaler"])
        self.method.load_training_state(_to_device(state.get("method_state") or {}, self.device))
        set_rng_state(state["rng"])
        self.epoch = int(state["epoch"])
        self.epoch_step = int(state.get("epoch_step") or 0)
        # Under torchrun the saved sums are already summed over ranks: rank 0 alone carries them on.
        main = self.world is None or self.world.is_main
        self._partial = {k: float(v) for k, v in (state.get("partial") or {}).items()} if main else {}
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
            within = f", step {self.epoch_step}" if self.epoch_step else ""
            self.log.info(f"resumed from {self.checkpoint} after epoch {self.epoch}/{s.epochs}{within}")
        n = len(self.train_set)  # type: ignore[arg-type]
        if n == 0:
            raise TrainingError("the training set is empty", hint="check the dataset, its classes and --shots")
        steps_per_epoch = n // s.batch_size if n >= s.batch_size else 1
        if self.world is not None and min(n, s.batch_size) < self.world.size:
            raise TrainingError(
                f"a global batch of {min(n, s.batch_size)} images cannot feed {self.world.size} processes",
                hint="use a batch size (and training set) of at least one image per process",
            )
        if not self._tracking:  # a resume drops what a killed process logged past its checkpoint
            self.tracker.begin(self.global_step)
            self._tracking = True
        t0 = time.perf_counter()
        if self.epoch < s.epochs:
            self.log.info(
                f"training {self.method.name}: {n} images, {len(self.method.classnames)} classes, "
                f"{s.epochs} epochs x {steps_per_epoch} steps of {s.batch_size}, lr {s.lr} "
                f"(warm-up {s.warmup_epochs} at {s.warmup_lr}), {s.precision} on {self.device}",
                echo=False,
            )
        self.progress.start(s.epochs * steps_per_epoch, self.epoch * steps_per_epoch + self.epoch_step)
        ctrl_c = self._ctrl_c = _CtrlC(self.log).install()
        kernels_back = deterministic_kernels(self.device)  # bit-identical reruns with several threads (see seeding)
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
            kernels_back()
            ctrl_c.uninstall()
            self._ctrl_c = None
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
        start, partial = self.epoch_step, self._partial
        if start == 0:
            seed_everything(derive_seed(s.seed, epoch, "epoch"))
        # else: resumed inside the epoch, every generator as it was after step `start` (see `resume`).
        lr = s.lr_at(epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        rank, world = (self.world.rank, self.world.size) if self.world is not None else (0, 1)
        loader = make_train_loader(
            self.train_set, s.batch_size, seed=s.seed, epoch=epoch, workers=s.workers, pin=self.device.type == "cuda",
            rank=rank, world=world, skip=start,
        )  # fmt: skip
        global_sizes = loader.batch_sampler.global_sizes()  # type: ignore[union-attr]
        self.method.train()
        self.progress.start_epoch(epoch + 1, s.epochs, steps_per_epoch, lr)
        self.progress.resume_epoch(start)
        t0 = time.perf_counter() - partial.get("seconds", 0.0)
        loss_sum = partial.get("loss_sum", 0.0)
        correct, seen = int(partial.get("correct", 0)), int(partial.get("seen", 0))
        for i, (images, labels) in enumerate(loader):
            step = start + i
            images = images.to(self.device, non_blocking=True)
            labels = labels.to(self.device, non_blocking=True)
            if self.world is None:
                with autocast(self.device, s.precision):
                    out = self.method(images)
                    loss, logs = self.method.compute_loss(out, labels)
                value = local = float(loss.detach())
            else:
                loss, logs, out, value, local = self._distributed_step(images, labels, global_sizes[i])
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
            self.tracker.log(self.global_step, {"epoch": epoch + 1, "loss": value, **logs, "lr": lr, "acc": acc})
            if (step + 1) % s.log_every == 0:
                parts = " ".join(f"{k} {v:.4f}" for k, v in logs.items())
                self.log.info(
                    f"epoch {epoch + 1}/{s.epochs} step {step + 1}/{steps_per_epoch}: loss {value:.4f} ({parts}) "
                    f"acc {acc:.2f}% lr {lr:.3e}",
                    echo=False,
                )
            if self._stop_requested():
                self._save_within_epoch(step + 1, loss_sum, correct, seen, time.perf_counter() - t0)
                raise KeyboardInterrupt
        self.epoch_step, self._partial = 0, {}
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

    def _stop_requested(self) -> bool:
        """Ctrl-C was pressed (under torchrun: on any rank, so that all of them stop after the same step)."""
        requested = self._ctrl_c is not None and self._ctrl_c.requested
        if self.world is not None:
            (total,) = distributed.all_reduce_sum([float(requested)])
            requested = total > 0
        return requested

    def _save_within_epoch(self, steps_done: int, loss_sum: float, correct: int, seen: int, seconds: float) -> None:
        """The checkpoint of a Ctrl-C: the epoch's first `steps_done` steps are in it."""
        if self.world is not None:
            loss_sum, correct, seen = distributed.all_reduce_sum([loss_sum, correct, seen])
        self.epoch_step = steps_done
        self._partial = {"loss_sum": loss_sum, "correct": float(correct), "seen": float(seen), "seconds": seconds}
        self.save()
        where = f"epoch {self.epoch + 1}/{self.s.epochs}, step {steps_done}"
        self.log.info(f"interrupted: saved {self.checkpoint} at {where}; continue with --resume", echo=False)

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
            hint="lower the learning rate (--set optim.lr=...), use model.precision=fp32 or amp, or check the data",
        )


def _to_device(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {k: _to_device(v, device) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_to_device(v, device) for v in value)
    return value


def check_same_precision(state: dict[str, Any], precision: str, path: Path) -> None:
    """A checkpoint from before ``amp`` existed has no precision entry; there ``fp16`` meant fp16 autocast
    with fp32 weights (today's ``amp``). Resuming it as today's ``fp16`` would switch the run to half
    weights and unscaled SGD midway, so it is refused."""
    saved = state.get("precision")
    if saved is None and precision == "fp16":
        raise CheckpointError(
            f"{path} was written when model.precision=fp16 meant fp16 autocast with fp32 weights (now called amp); "
            "today fp16 is the authors' half-precision mode, so resuming would change the run midway",
            hint="start it again with --overwrite (set model.precision=amp for what it ran), or finish it with "
            "the restore version that started it",
        )
    if saved is not None and saved != precision:
        raise CheckpointError(
            f"{path} was trained with model.precision={saved}, not {precision}",
            hint=f"resume with --set model.precision={saved}",
        )
