"""`restore analyze`: the feature-shift diagnostics of finished runs, as JSON and the paper's three figures.

For each run directory the trained method is rebuilt on its backbone and data (the same few-shot draw), and
its per-layer shift profile is measured on the same training images the run recorded its profile on (so
the numbers equal ``metrics.shift`` of the run), or on the test images of one evaluation split. Then:

- ``layer_shifts.png``: per-layer s^v, s^t and their discrepancy, one line per method (Fig. 4a);
- ``discrepancy_vs_gain.png``: total discrepancy against base/novel accuracy gain over zero-shot CLIP of
  the same backbone on the same splits (Fig. 3); zero-shot is a run among the inputs or evaluated here;
- ``tsne.png``: image (dots) and class-text (stars) features of the evaluation splits (Fig. 5);
- ``analysis.json``: every number behind the figures.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from restore.analysis.plots import GainPoint, TsnePanel, plot_discrepancy_vs_gain, plot_layer_shifts, plot_tsne
from restore.analysis.shift import ShiftProfile, measure_shifts
from restore.data import ImageDataset, eval_transform
from restore.engine.evaluate import evaluate_splits
from restore.engine.plan import RunPlan, plan_run
from restore.engine.run_dir import METRICS_FILE, MODEL_FILE, read_run_config
from restore.engine.runs import shift_profile
from restore.errors import ConfigError
from restore.fileio import atomic_write_json
from restore.methods import build_method
from restore.methods.model_file import read_method


@dataclasses.dataclass
class RunAnalysis:
    run_dir: str
    method: str
    dataset: str
    protocol: str
    seed: int
    split: str
    profile: ShiftProfile
    accuracy: dict[str, float]  # evaluation split -> top-1 (from the run's metrics)
    zero_shot: dict[str, float] = dataclasses.field(default_factory=dict)  # same splits, zero-shot CLIP

    @property
    def gain(self) -> dict[str, float]:
        return {k: self.accuracy[k] - self.zero_shot[k] for k in self.accuracy if k in self.zero_shot}

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_dir": self.run_dir,
            "method": self.method,
            "dataset": self.dataset,
            "protocol": self.protocol,
            "seed": self.seed,
            "split": self.split,
            "shift": self.profile.to_dict(),
            "accuracy": self.accuracy,
            "zero_shot_accuracy": self.zero_shot,
            "gain_over_zero_shot": self.gain,
        }


def _plan_for(run_dir: Path, root: Path | None, device: str) -> RunPlan:
    """The run's plan (backbone, data, method) with the trained weights loaded; nothing is written."""
    config = read_run_config(run_dir)
    changes: dict[str, Any] = {"device": device}
    if root is not None:
        changes["data"] = dataclasses.replace(config.data, root=root)
    plan = plan_run(dataclasses.replace(config, **changes), run_dir=run_dir)
    plan.method.load_learnable_state_dict(read_method(run_dir / MODEL_FILE).state)
    plan.method.set_classes(plan.data.train.classnames, dataset=plan.dataset_title)
    plan.method.eval()
    return plan


def _test_loader(plan: RunPlan, items) -> DataLoader:
    c = plan.config
    return DataLoader(ImageDataset(items, eval_transform(c.data.image_size)), batch_size=c.data.eval_batch_size)


def _profile(plan: RunPlan, split: str) -> ShiftProfile:
    if split == "train":  # exactly what the run recorded
        d = shift_profile(plan)
        return ShiftProfile(d["measure"], d["vision"], d["text"], d["images"])
    if split not in plan.data.evaluate:
        raise ConfigError(f"split {split!r} is not one of this run's: train, {', '.join(plan.data.evaluate)}")
    splits = plan.data.evaluate[split]
    plan.method.set_classes(splits.classnames)
    settings = plan.method.restore_settings
    try:
        return measure_shifts(
            plan.method,
            _test_loader(plan, splits.test),
            measure=settings.get("shift_measure", "activation"),
            normalisation=settings.get("normalisation", "rms"),
            device=plan.device,
        )
    finally:
        plan.method.set_classes(plan.data.train.classnames)


@torch.no_grad()
def _features(method, plan, splits, limit: int) -> TsnePanel | None:
    items = splits.test[:: max(1, len(splits.test) // limit)][:limit]
    method.set_classes(splits.classnames)
    feats, labels = [], []
    text = None
    for images, y in _test_loader(plan, items):
        out = method(images.to(plan.device), shift=None)
        feats.append(out.image_features.float().cpu())
        labels.append(y)
        t = out.text_features.float().cpu()
        t = t.mean(0) if t.dim() == 3 else t  # CoCoOp: the per-image class texts, averaged
        text = t if text is None else text
    method.set_classes(plan.data.train.classnames)
    if text is None:
        return None
    return TsnePanel("", torch.cat(feats).numpy(), torch.cat(labels).numpy(), text.numpy(), list(splits.classnames))


def _zero_shot_accuracy(plan: RunPlan) -> dict[str, float]:
    """Zero-shot CLIP of the run's backbone on the run's evaluation splits (the Fig. 3 gains' reference)."""
    zs = build_method("zeroshot", plan.clip, plan.data.train.classnames, plan.dataset_title).to(plan.device)
    c = plan.config
    metrics, _ = evaluate_splits(
        zs, plan.data.evaluate, image_size=c.data.image_size, batch_size=c.data.eval_batch_size, device=plan.device
    )
    return {label: m["top1"] for label, m in metrics.items() if label != "hm"}


def analyze_runs(
    run_dirs: Sequence[str | Path],
    out: str | Path,
    *,
    root: Path | None = None,
    split: str = "train",
    device: str = "cpu",
    tsne_images: int = 200,
    tsne: bool = True,
    zero_shot: bool = True,
) -> dict[str, Any]:
    """Analyse finished runs and write ``analysis.json`` and the PNG figures into ``out``; returns the JSON."""
    if not run_dirs:
        raise ConfigError("no run directories given", hint="pass one or more run directories of finished runs")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    analyses: list[RunAnalysis] = []
    panels: list[TsnePanel] = []
    zs_cache: dict[tuple, dict[str, float]] = {}
    for rd in map(Path, run_dirs):
        metrics_path = rd / METRICS_FILE
        if not metrics_path.is_file():
            raise ConfigError(f"{rd} is not a finished run (no {METRICS_FILE})", hint="finish or resume the run first")
        metrics = json.loads(metrics_path.read_text()).get("metrics", {})
        plan = _plan_for(rd, root, device)
        c = plan.config
        acc = {k: float(v["top1"]) for k, v in metrics.items() if isinstance(v, dict) and "top1" in v}
        a = RunAnalysis(str(rd), c.method_name, plan.dataset, c.protocol, c.seed, split, _profile(plan, split), acc)
        key = (str(c.model.backbone), plan.dataset, c.protocol, c.seed, c.data.shots)
        if c.method_name == "zeroshot":
            zs_cache[key] = acc
        analyses.append(a)
        if tsne:
            for label, splits in plan.data.evaluate.items():
                panel = _features(plan.method, plan, splits, tsne_images)
                if panel is not None:
                    panel.title = f"{c.method_name} / {label} (seed {c.seed})"
                    panels.append(panel)
        if zero_shot and key not in zs_cache:
            zs_cache[key] = _zero_shot_accuracy(plan)
        a.zero_shot = zs_cache.get(key, {})
    for a in analyses:  # a zero-shot run given after the others still serves them
        if not a.zero_shot:
            a.zero_shot = next((v for k, v in zs_cache.items() if k[1:4] == (a.dataset, a.protocol, a.seed)), {})

    by_method: dict[str, list[RunAnalysis]] = defaultdict(list)
    for a in analyses:
        by_method[a.method].append(a)
    profiles = {m: _mean_profile([a.profile for a in runs]) for m, runs in by_method.items()}
    figures = {"layer_shifts": str(plot_layer_shifts(profiles, out / "layer_shifts.png"))}
    points = []
    for m, runs in by_method.items():
        gains = [a.gain for a in runs if a.gain]
        if not gains:
            continue
        first = list(gains[0])
        base_key = "base" if "base" in first else first[0]
        novel_key = "novel" if "novel" in first else base_key
        points.append(
            GainPoint(
                m,
                statistics.mean(sum(a.profile.discrepancy) for a in runs),
                statistics.mean(g.get(base_key, 0.0) for g in gains),
                statistics.mean(g.get(novel_key, 0.0) for g in gains),
            )
        )
    if points:
        figures["discrepancy_vs_gain"] = str(plot_discrepancy_vs_gain(points, out / "discrepancy_vs_gain.png"))
    if panels:
        figures["tsne"] = str(plot_tsne(panels, out / "tsne.png"))
    result = {
        "runs": [a.to_dict() for a in analyses],
        "methods": {m: p.to_dict() for m, p in profiles.items()},
        "gain_points": [dataclasses.asdict(p) for p in points],
        "figures": figures,
        "note": "s_l per layer; discrepancy (s_l^v - s_l^t)^2; gains in accuracy points over zero-shot CLIP",
    }
    atomic_write_json(out / "analysis.json", result)
    return result


def summary_lines(result: dict[str, Any]) -> list[str]:
    """What `restore analyze` prints: one line per run with its shift totals and its gains over zero-shot CLIP
    as signed points (`base -1.67, novel +2.50`), then where the files went."""
    lines = []
    width = max((len(r["method"]) for r in result["runs"]), default=0)
    for r in result["runs"]:
        sh = r["shift"]
        gains = r.get("gain_over_zero_shot") or {}
        gain = ", ".join(f"{k} {v:+.2f}" for k, v in gains.items()) if gains else "n/a (no zero-shot accuracy)"
        lines.append(
            f"{r['method']:<{width}}  seed {r['seed']}:  Σ s_v {sh['total_vision']:.4f}  Σ s_t {sh['total_text']:.4f}"
            f"  discrepancy {sh['total_discrepancy']:.4f}  gain over zero-shot (points): {gain}"
        )
    return lines


def _mean_profile(profiles: list[ShiftProfile]) -> ShiftProfile:
    """The mean over seeds, layer by layer."""
    first = profiles[0]
    vision = np.mean([p.vision for p in profiles], axis=0).tolist()
    text = np.mean([p.text for p in profiles], axis=0).tolist()
    return ShiftProfile(first.measure, vision, text, sum(p.images for p in profiles))
