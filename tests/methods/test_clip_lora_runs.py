"""CLIP-LoRA and RESTORE on it through the engine: its AdamW schedule, the recorded LoRA shift profile, and
`restore analyze` (Fig. 3 / 4a) on its runs."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from restore.cli import main
from restore.engine.run_config import load_run_config, resolve
from restore.engine.runs import run
from restore.engine.train_checkpoint import load_training_checkpoint
from restore.methods.schedules import schedule_settings
from tests.engine.fakes import TINY, make_tree


def _values(data, out, method: str, **extra):
    return {**TINY, "method": method, "protocol": "b2n", "data.dataset": "dtd", "data.root": data, "out": out,
            "optim.epochs": 2, "data.batch_size": 4, "data.shots": 4, "method.dropout": 0.0, **extra}  # fmt: skip


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    data = make_tree(tmp_path_factory.mktemp("data"))
    out = tmp_path_factory.mktemp("runs")
    dirs = {}
    for method in ("clip_lora", "restore_lora", "zeroshot"):
        values = _values(data, out, method)
        if method == "zeroshot":
            values.pop("method.dropout")
        dirs[method] = run(load_run_config(None, values, [])).run_dir
    return dirs


def test_the_schedule_sets_adamw_and_the_iterations_as_epochs(tmp_path):
    # DTD base-to-novel, 16 shots: 24 base classes x 16 = 384 images, 12 steps of 32; 8000 iterations
    s = schedule_settings("clip_lora", "own", "b2n", "dtd", 16)
    assert s == {"optim.lr": 2e-4, "optim.epochs": 667, "data.batch_size": 32, "optim.optimizer": "adamw",
                 "optim.weight_decay": 0.01, "optim.warmup_epochs": 0}  # fmt: skip
    assert schedule_settings("clip_lora", "own", "fewshot", "imagenet", 16)["optim.epochs"] == 16  # 500 steps
    cfg = resolve(load_run_config(None, {"method": "clip_lora", "data.dataset": "dtd", "optim.weight_decay": 0.1}))
    assert (cfg.optim.optimizer, cfg.optim.weight_decay, cfg.optim.warmup_epochs) == ("adamw", 0.1, 0)  # user wins
    maple = resolve(load_run_config(None, {"method": "maple", "data.dataset": "dtd"}))
    assert (maple.optim.optimizer, maple.optim.weight_decay) == ("sgd", 5e-4)
    assert "optimizer" not in maple.identity()["optim"]  # earlier runs keep their hash


def test_clip_lora_run_trains_with_adamw_and_records_its_lora_shifts(runs):
    run_dir = runs["clip_lora"]
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["optim"]["optimizer"] == "adamw" and config["optim"]["lr"] == 2e-4
    state = load_training_checkpoint(run_dir / "checkpoints" / "last.pt")
    (group,) = state["optimizer"]["param_groups"]
    assert tuple(group["betas"]) == (0.9, 0.999) and group["weight_decay"] == 0.01
    assert all(k.startswith("lora.") for k in state["learnable"])
    shift = json.loads((run_dir / "metrics.json").read_text())["metrics"]["shift"]
    # every LoRA block of both towers has moved away from the frozen CLIP
    assert len(shift["vision"]) == len(shift["text"]) == 3 and min(shift["vision"] + shift["text"]) > 0


def test_restore_lora_run_logs_its_consistency_loss_and_guides_alpha(runs):
    steps = [json.loads(line) for line in (runs["restore_lora"] / "scalars.jsonl").read_text().splitlines()]
    assert len(steps) == 6 and all("fs" in s and "alpha_v" in s for s in steps)
    # B = 0: no shift at the first step, so the guided α waits at DTD's ratios (0.15, 0.1) to calibrate ...
    assert (steps[0]["shift_v"], steps[0]["fs"]) == (0.0, 0.0)
    assert (steps[0]["alpha_v"], steps[0]["alpha_t"]) == pytest.approx((0.15, 0.1))
    # ... on the first step with a shift, and then follows it (it does not decay to 0)
    assert steps[1]["shift_v"] > 0 and steps[1]["fs"] > 0
    assert all(s["alpha_v"] > 0.05 for s in steps)


def test_analyze_profiles_lora_runs_as_they_recorded(runs, tmp_path):
    out = tmp_path / "analysis"
    assert main(["analyze", *map(str, runs.values()), "--out", str(out), "--tsne-images", "8"]) == 0
    result = json.loads((out / "analysis.json").read_text())
    by_method = {r["method"]: r for r in result["runs"]}
    for method in ("clip_lora", "restore_lora"):
        recorded = json.loads((runs[method] / "metrics.json").read_text())["metrics"]["shift"]
        ours = by_method[method]["shift"]
        assert ours["vision"] == pytest.approx(recorded["vision"], rel=1e-5)
        assert ours["text"] == pytest.approx(recorded["text"], rel=1e-5)
        assert by_method[method]["gain_over_zero_shot"]
    assert by_method["zeroshot"]["shift"]["total_vision"] == 0.0
    for name in ("layer_shifts", "discrepancy_vs_gain"):
        assert (out / f"{name}.png").stat().st_size > 1000
    assert torch.is_grad_enabled()


def test_restore_methods_lists_clip_lora_and_its_fields(capsys):
    assert main(["methods", "clip_lora"]) == 0
    printed = capsys.readouterr().out
    for field in ("method.rank", "method.alpha", "method.dropout", "method.targets", "method.position"):
        assert field in printed
    assert "500 x shots iterations" in printed
    assert main(["methods", "restore_lora"]) == 0
    assert "method.fs_weight" in capsys.readouterr().out
