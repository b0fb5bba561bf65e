"""The run directory: the files a run writes and reads back (names, config.yaml, split.json, run.json header,
metrics.json), and the rule that a folder holding a run is not reused without --resume or --overwrite.

    <out>/<protocol>/<dataset>/<method>[-<tag>]/shots<N>_seed<S>-<hash8>/
        config.yaml          the resolved config (every default filled in); `--config` reproduces the run
        log.txt              what happened, appended across resumes
        run.json             run id, status, backbone, code version, times
        checkpoints/last.pt  the training checkpoint of the last finished epoch (resume)
        model.safetensors    the learnable state (restore.methods.model_file format)
        metrics.json         per evaluated split top-1/top-5/n (+ HM for base-to-novel), timings, history
        .owner.lock          while a process works here: its lock (`restore.engine.ownership`)
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from restore.data import load_dataset
from restore.data.folder import SPLIT_FILE, write_split_file
from restore.data.registry import get_dataset
from restore.engine import ownership
from restore.engine.plan import RunPlan, run_classnames, run_dataset
from restore.engine.run_config import RunConfig, build_run_config
from restore.engine.train_checkpoint import differences
from restore.errors import ConfigError, RestoreError
from restore.fileio import atomic_write_json, atomic_write_text
from restore.options import load_yaml

CONFIG_FILE = "config.yaml"
LOG_FILE = "log.txt"
RUN_FILE = "run.json"
METRICS_FILE = "metrics.json"
MODEL_FILE = "model.safetensors"
CHECKPOINT_FILE = Path("checkpoints") / "last.pt"


@dataclass
class RunResult:
    """What a run produced. ``metrics`` is the results-database layout: ``{split: {"top1", "top5", "n"}}``
    plus ``"hm"`` for base-to-novel."""

    run_dir: Path
    run_id: str
    status: str
    config: RunConfig
    metrics: dict[str, Any]
    timings: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)

    def top1(self, split: str) -> float:
        return float(self.metrics[split]["top1"])

    def summary(self) -> str:
        parts = [f"{k} {v['top1']:.2f}" for k, v in self.metrics.items() if isinstance(v, dict) and "top1" in v]
        if "hm" in self.metrics:
            parts.append(f"HM {self.metrics['hm']:.2f}")
        skipped = (self.metrics.get("extra") or {}).get("skipped_targets") or {}
        parts += [f"(skipped {target}: {why})" for target, why in skipped.items()]
        return "  ".join(parts)


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON file of the run, or None when it is missing or unreadable (a kill mid-write elsewhere)."""
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def prepare_run_dir(run_dir: Path, *, resume: bool, overwrite: bool) -> dict[str, Any] | None:
    """The previous run.json when resuming; refuses to mix a new run into a directory that holds one."""
    info = read_json(run_dir / RUN_FILE)
    holds_run = any((run_dir / p).exists() for p in (CHECKPOINT_FILE, MODEL_FILE, METRICS_FILE))
    if overwrite and run_dir.exists():
        for child in run_dir.iterdir():  # everything but the lock this process holds on the folder
            if child.name != ownership.LOCK_FILE:
                shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
        return None
    if holds_run and not resume:
        state = (info or {}).get("status", "unfinished")
        raise ConfigError(
            f"run directory {run_dir} already holds a {state} run of this config",
            hint="pass --resume to continue (or re-report) it, or --overwrite to start it again",
        )
    return info if resume else None


def describe_changes(run_dir: Path, config: RunConfig) -> str:
    """How ``config`` differs from the run the folder holds (its config.yaml), for a refused resume."""
    try:
        previous = read_run_config(run_dir).identity()
    except RestoreError:
        previous = {}
    diffs = differences(previous, config.identity())
    return "; ".join(f"{k}: {a!r} before, {b!r} now" for k, a, b in diffs[:6]) or "its config.yaml is unreadable"


def write_config(run_dir: Path, config: RunConfig) -> None:
    command = "restore train" if config.protocol == "train" else f"restore run {config.protocol}"
    header = f"# resolved run config: `{command} --config config.yaml` repeats this run\n"
    atomic_write_text(run_dir / CONFIG_FILE, header + yaml.safe_dump(config.to_dict(), sort_keys=False))


def write_split(plan: RunPlan) -> None:
    """A run of an image folder records the split it drew (a CoOp split file beside its config.yaml)."""
    spec = get_dataset(plan.dataset)
    if spec.location is not None and not plan.config.data.split_file:
        whole = load_dataset(run_dataset(plan.config), plan.config.data.root or spec.location)
        write_split_file(whole, plan.run_dir / SPLIT_FILE)


def read_run_config(run_dir: str | Path) -> RunConfig:
    """The resolved config a run directory holds."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise ConfigError(f"{run_dir} is not a run directory (no {CONFIG_FILE})", hint="pass the folder a run wrote")
    return build_run_config(load_yaml(path))


def run_header(plan: RunPlan) -> dict[str, Any]:
    """What run.json and metrics.json both say the run is."""
    c = plan.config
    return {
        "method": c.method_name,
        "dataset": plan.dataset,
        "protocol": c.protocol,
        "shots": c.data.shots,
        "seed": c.seed,
        "backbone": plan.backbone,
        "config_hash": c.short_hash(),
    }


def write_metrics(
    plan: RunPlan, run_id: str, metrics: dict[str, Any], timings: dict[str, Any], history: list[dict[str, float]]
) -> None:
    atomic_write_json(
        plan.run_dir / METRICS_FILE,
        {
            "run_id": run_id,
            **run_header(plan),
            "metrics": metrics,
            "timings": timings,
            "history": history,
            "notes": list(plan.data.train.notes),
            "classnames": run_classnames(plan),
        },
    )
