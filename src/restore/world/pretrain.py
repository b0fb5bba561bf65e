"""Contrastive pretraining of the world CLIP on generated image-caption pairs.

Reproducible from its config alone: the model is initialised from ``seed``, batch t holds indices
[t*B, (t+1)*B) of the world drawn from ``seed``, and torch runs on a fixed number of threads. (Bitwise equality
across machines is not promised: BLAS kernels differ between CPUs; the same machine and threads repeat.)

Soft targets: a caption that leaves an attribute out also describes other images of the batch ("a red circle"
fits every red circle); with ``soft_targets`` those images share the caption's target mass instead of being
pushed away as negatives.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from restore.clip.model import CLIP
from restore.clip.tokenizer import tokenize
from restore.errors import ConfigError
from restore.world.accuracy import to_input, zero_shot_accuracy
from restore.world.generator import Scene, WorldConfig, generate
from restore.world.tasks import PROBES, TASKS, ZERO_SHOT_TEMPLATE, task_images
from restore.world.weights import save_clip
from restore.world.world_clip import ModelSize, build_world_clip


@dataclass(frozen=True)
class PretrainConfig:
    seed: int = 0
    steps: int = 3000
    batch_size: int = 256
    lr: float = 2e-3
    final_lr_ratio: float = 0.05
    warmup_steps: int = 100
    weight_decay: float = 0.1
    soft_targets: bool = True
    # Curriculum: the share of easy scenes (one large or medium solid object on a plain background) starts
    # at curriculum_start and falls linearly to curriculum_end at curriculum_steps, then stays there.
    curriculum_start: float = 0.0
    curriculum_end: float = 0.0
    curriculum_steps: int = 0
    threads: int = 2
    eval_every: int = 250
    eval_per_class: int = 20  # test images per class in the periodic evaluation (the final one uses all)
    model: ModelSize = field(default_factory=ModelSize)
    world: WorldConfig = field(default_factory=WorldConfig)

    def __post_init__(self) -> None:
        if self.model.image_size != self.world.image_size:
            raise ConfigError(
                f"model image size {self.model.image_size} differs from the generator's {self.world.image_size}",
                hint="set model.image_size and world.image_size to the same value",
            )
        if self.steps < 1 or self.batch_size < 2:
            raise ConfigError(f"steps ({self.steps}) must be >= 1 and batch_size ({self.batch_size}) >= 2")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PretrainConfig:
        d = dict(d)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown pretraining config keys {unknown}", hint=f"known keys: {sorted(known)}")
        try:
            model = ModelSize(**d.pop("model", {}))
            world = WorldConfig(**d.pop("world", {}))
            return cls(model=model, world=world, **d)
        except TypeError as e:
            raise ConfigError(f"bad pretraining config: {e}") from e

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_yaml(cls, path: Path | str) -> PretrainConfig:
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"no pretraining config at {path}")
        return cls.from_dict(yaml.safe_load(path.read_text()) or {})

    def with_overrides(self, **kwargs: Any) -> PretrainConfig:
        return replace(self, **{k: v for k, v in kwargs.items() if v is not None})


# --- targets ----------------------------------------------------------------------------------------------


def _attributes(scenes: Sequence[Scene], image_size: int) -> dict[str, np.ndarray]:
    n = len(scenes)
    out = {k: np.full((n, 2), -1, dtype=np.int64) for k in ("shape", "colour", "pattern", "size", "position")}
    said = {k: np.zeros((n, 2), dtype=bool) for k in ("colour", "pattern", "size", "position")}
    for i, sc in enumerate(scenes):
        for s, o in enumerate(sc.objects):
            col, row = o.position(image_size)
            for k, v in (("shape", o.shape), ("colour", o.colour), ("pattern", o.pattern), ("size", o.size)):
                out[k][i, s] = v
            out["position"][i, s] = 3 * row + col
        for k in said:
            said[k][i] = getattr(sc.mentions, k)
    out["bg"] = np.array([sc.background for sc in scenes])
    out["bg_said"] = np.array([sc.mentions.background for sc in scenes])
    out.update({f"{k}_said": v for k, v in said.items()})
    return out


def consistency(scenes: Sequence[Scene], image_size: int) -> torch.Tensor:
    """(B, B) bool: [i, j] is True when caption j is true of image i (the diagonal always is).

    Two-object captions match either assignment of their objects; spatial relations are not checked.
    """
    a = _attributes(scenes, image_size)
    n = len(scenes)
    result = np.zeros((n, n), dtype=bool)
    for perm in ((0, 1), (1, 0)):
        ok = np.ones((n, n), dtype=bool)
        for s in range(2):
            ok &= a["shape"][:, perm[s]][:, None] == a["shape"][:, s][None, :]
            for k in ("colour", "pattern", "size", "position"):
                same = a[k][:, perm[s]][:, None] == a[k][:, s][None, :]
                ok &= same | ~a[f"{k}_said"][:, s][None, :]
        result |= ok
    result &= (a["bg"][:, None] == a["bg"][None, :]) | ~a["bg_said"][None, :]
    return torch.from_numpy(result)


def contrastive_loss(logits: torch.Tensor, targets: torch.Tensor | None) -> torch.Tensor:
    """Symmetric cross-entropy; ``targets`` (bool, [image, caption]) spreads each row's mass over matches."""
    if targets is None:
        labels = torch.arange(logits.shape[0])
        return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2
    t = targets.float()
    to_text = -(t / t.sum(1, keepdim=True) * F.log_softmax(logits, dim=1)).sum(1).mean()
    to_image = -(t / t.sum(0, keepdim=True) * F.log_softmax(logits, dim=0)).sum(0).mean()
    return (to_text + to_image) / 2


# --- training ---------------------------------------------------------------------------------------------


def lr_at(cfg: PretrainConfig, step: int) -> float:
    """Linear warm-up, then cosine decay to ``final_lr_ratio * lr``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    floor = cfg.final_lr_ratio
    return cfg.lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def _param_groups(model: CLIP, weight_decay: float) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        plain = p.ndim < 2 or "embedding" in name or name == "logit_scale"
        (no_decay if plain else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


@dataclass
class PretrainResult:
    model: CLIP
    config: PretrainConfig
    history: list[dict[str, Any]]  # one entry per evaluation: step, seconds, loss, accuracy per task
    final: dict[str, float]  # zero-shot accuracy per task on the full test split
    seconds: float
    data_seconds: float  # generating and tokenising batches
    pairs: int

    def record(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "zero_shot": self.final,
            "chance": {name: 1 / len(TASKS[name].classes) for name in self.final},
            "history": self.history,
            "seconds": self.seconds,
            "data_seconds": self.data_seconds,
            "pairs": self.pairs,
            "pairs_per_second": self.pairs / self.seconds,
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "machine": _machine(self.config.threads),
        }


def world_at(cfg: PretrainConfig, step: int) -> WorldConfig:
    """The generator settings of training step ``step`` (the curriculum's share of easy scenes)."""
    if cfg.curriculum_steps <= 0:
        return cfg.world
    frac = min(1.0, step / cfg.curriculum_steps)
    share = cfg.curriculum_start + (cfg.curriculum_end - cfg.curriculum_start) * frac
    return replace(cfg.world, easy_prob=share)


def _machine(threads: int) -> str:
    cpu = platform.processor() or platform.machine()
    return f"{platform.system()} {cpu}, {os.cpu_count()} CPUs, torch {torch.__version__}, {threads} thread(s)"


def make_batch(cfg: PretrainConfig, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(images, tokens, targets) of training step ``step``: a pure function of the config and the step."""
    start = step * cfg.batch_size
    batch = generate(cfg.seed, range(start, start + cfg.batch_size), world_at(cfg, step))
    tokens = tokenize(batch.captions, context_length=cfg.model.context_length)
    targets = consistency(batch.scenes, cfg.world.image_size) if cfg.soft_targets else None
    return to_input(batch.images), tokens, targets


def evaluate(model: CLIP, eval_sets: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    return {
        name: zero_shot_accuracy(model, images, labels, TASKS[name].classnames, ZERO_SHOT_TEMPLATE)
        for name, (images, labels) in eval_sets.items()
    }


def pretrain(
    cfg: PretrainConfig,
    *,
    log: Callable[[str], None] | None = None,
    progress: bool = False,
    tasks: Sequence[str] | None = None,
    state_dir: Path | str | None = None,
) -> PretrainResult:
    """Train a world CLIP from scratch as ``cfg`` says; evaluate zero-shot every ``eval_every`` steps.

    With ``state_dir``, the full training state is saved there at every evaluation and a run with the same
    config resumes from it exactly (batches are a function of the step; nothing else is random).
    """
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    say = log or (lambda _msg: None)
    model = build_world_clip(cfg.model).train()
    opt = torch.optim.AdamW(_param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6)
    names = list(tasks) if tasks is not None else list(PROBES)
    quick_sets = {n: task_images(n, "test", limit_per_class=cfg.eval_per_class) for n in names}
    state = {"step": 0, "history": [], "running": float("nan"), "seconds": 0.0, "data_seconds": 0.0}
    resume = Path(state_dir) / "resume.pt" if state_dir is not None else None
    if resume is not None and resume.exists():
        saved = torch.load(resume, weights_only=False)
        if saved["config"] == cfg.to_dict():
            model.load_state_dict(saved["model"])
            opt.load_state_dict(saved["optimizer"])
            state = saved["state"]
            say(f"resuming from step {state['step']} ({resume})")
        else:
            say(f"ignoring {resume}: it belongs to another config")

    def report(step: int) -> None:
        acc = evaluate(model, quick_sets)
        loss, elapsed = state["running"], state["seconds"]
        state["history"].append({"step": step, "seconds": round(elapsed, 1), "loss": round(loss, 4), **acc})
        accs = "  ".join(f"{n} {100 * a:5.1f}%" for n, a in acc.items())
        say(f"step {step:>6}  loss {loss:6.3f}  {elapsed:7.0f}s  zero-shot: {accs}")

    def save_state(step: int) -> None:
        if resume is None:
            return
        resume.parent.mkdir(parents=True, exist_ok=True)
        blob = {"config": cfg.to_dict(), "model": model.state_dict(), "optimizer": opt.state_dict(), "state": state}
        torch.save(blob, resume.with_suffix(".tmp"))
        resume.with_suffix(".tmp").replace(resume)

    if state["step"] == 0:
        report(0)
    bar = _progress_bar(progress, cfg.steps)
    with bar:
        task_id = bar.add_task("pretraining", total=cfg.steps, completed=state["step"], loss=float("nan"))
        for step in range(state["step"], cfg.steps):
            t0 = time.perf_counter()
            images, tokens, targets = make_batch(cfg, step)
            state["data_seconds"] += time.perf_counter() - t0
            for group in opt.param_groups:
                group["lr"] = lr_at(cfg, step)
            loss = contrastive_loss(model(images, tokens), targets)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, math.log(100))
            r = state["running"]
            state["running"] = loss.item() if math.isnan(r) else 0.95 * r + 0.05 * loss.item()
            state["seconds"] += time.perf_counter() - t0
            bar.update(task_id, advance=1, loss=state["running"])
            if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps:
                state["step"] = step + 1
                report(step + 1)
                save_state(step + 1)
    model.eval()
    final = evaluate(model, {n: task_images(n, "test") for n in names})
    say("final zero-shot (full test splits): " + "  ".join(f"{n} {100 * a:.1f}%" for n, a in final.items()))
    return PretrainResult(
        model, cfg, state["history"], final, state["seconds"], state["data_seconds"], cfg.steps * cfg.batch_size
    )


class _NoBar:
    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def add_task(self, *args: Any, **kwargs: Any) -> int:
        return 0

    def update(self, *args: Any, **kwargs: Any) -> None:
        return None


def _progress_bar(show: bool, total: int):
    if not show:
        return _NoBar()
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.3f}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )


def save_run(result: PretrainResult, out_dir: Path | str, name: str = "world_clip") -> dict[str, Path]:
    """Write ``<name>.safetensors`` (config and zero-shot numbers in its metadata), ``<name>.yaml`` (the
    config that reproduces it) and ``<name>.json`` (the training record)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    record = result.record()
    meta = {"restore_world_pretrain": json.dumps(result.config.to_dict()), "zero_shot": json.dumps(result.final)}
    paths = {
        "weights": save_clip(result.model, out / f"{name}.safetensors", metadata=meta),
        "config": out / f"{name}.yaml",
        "record": out / f"{name}.json",
    }
    paths["config"].write_text(result.config.to_yaml())
    paths["record"].write_text(json.dumps(record, indent=2))
    return paths
