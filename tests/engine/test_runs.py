"""Whole runs through the engine: the run directory, metrics.json, the database row, resume and overwrite,
failures recorded, and validation that writes nothing."""

from __future__ import annotations

import json
import re

import pytest
import torch
import yaml

from restore.engine.run_config import load_run_config
from restore.engine.runs import run
from restore.errors import ConfigError, DataError, TrainingError
from tests.engine.fakes import TINY


def _cfg(data_root, out, protocol="b2n", method="coop", overrides=(), **flags):
    values = {**TINY, "method": method, "protocol": protocol, "data.dataset": "dtd", "data.root": data_root,
              "out": out, "optim.epochs": 2, "data.batch_size": 4, "data.shots": 4, **flags}  # fmt: skip
    return load_run_config(None, values, list(overrides))


def _rows(db):
    from restore.results import open_results

    with open_results(db) as store:
        return store.query()


def test_b2n_run_writes_its_directory_metrics_and_row(data_root, tmp_path):
    out = tmp_path / "runs"
    result = run(_cfg(data_root, out))
    rel = result.run_dir.relative_to(out).as_posix()
    assert re.fullmatch(r"b2n/dtd/coop/shots4_seed1-[0-9a-f]{8}", rel), rel
    for name in ("config.yaml", "log.txt", "run.json", "metrics.json", "model.safetensors", "checkpoints/last.pt"):
        assert (result.run_dir / name).is_file(), name

    saved = json.loads((result.run_dir / "metrics.json").read_text())
    m = saved["metrics"]
    assert set(m) == {"base", "novel", "hm", "shift"}
    assert m["base"]["n"] == 3 * 4 and m["novel"]["n"] == 3 * 4  # 6 classes: 3 base, 3 novel; 4 test images each
    b, n = m["base"]["top1"], m["novel"]["top1"]
    assert m["hm"] == pytest.approx(0.0 if b + n == 0 else 2 * b * n / (b + n))
    assert saved["method"] == "coop" and saved["protocol"] == "b2n" and saved["seed"] == 1 and saved["shots"] == 4
    assert len(saved["history"]) == 2 and saved["timings"]["steps"] == 2 * 3  # 3 base classes x 4 shots / batch 4

    config = yaml.safe_load((result.run_dir / "config.yaml").read_text())
    assert config["optim"]["lr"] == 0.002 and config["data"]["image_size"] == 32  # resolved defaults written out
    assert "training coop" in (result.run_dir / "log.txt").read_text()

    (row,) = _rows(out / "results.sqlite")
    assert row.status == "finished" and row.method == "coop" and row.dataset == "dtd" and row.protocol == "b2n"
    assert row.metrics["base"] == m["base"] and row.metrics["novel"] == m["novel"]
    assert row.run_id == saved["run_id"] and row.backbone == "random-tiny" and row.shots == 4
    assert row.run_dir == str(result.run_dir.resolve())

    # The written model, reloaded and evaluated again, gives the recorded numbers.
    from restore.api import evaluate, load_run

    loaded = load_run(result.run_dir)
    assert loaded.metrics == m and loaded.config.hash() == result.config.hash()
    again = evaluate(result.run_dir, dataset="dtd", root=data_root, protocol="b2n", device="cpu")
    assert again["base"] == m["base"] and again["novel"] == m["novel"]


def test_runs_record_the_feature_shift_profile_of_the_trained_method(data_root, tmp_path):
    from restore.analysis.shift import measure_shifts
    from restore.api import load_run
    from restore.data import ImageDataset, eval_transform

    result = run(_cfg(data_root, tmp_path / "runs", method="restore_m", **{"shift_images": 6}))
    shift = result.metrics["shift"]
    assert shift["measure"] == "activation/rms" and shift["images"] == 6
    assert len(shift["vision"]) == len(shift["text"]) == 3  # the tiny towers' layers
    pairs = zip(shift["vision"], shift["text"], strict=True)
    assert shift["discrepancy"] == pytest.approx(sum((v - t) ** 2 for v, t in pairs))
    (row,) = _rows(tmp_path / "runs" / "results.sqlite")
    assert row.metrics["shift"]["vision"] == shift["vision"]

    # Recomputed from the saved model on the same 6 training images (every 2nd of the 12 base-class shots).
    from restore.data import base_to_novel, few_shot, load_dataset

    base, _ = base_to_novel(few_shot(load_dataset("dtd", data_root), 4, 1))
    loaded = load_run(result.run_dir, classes=base.classnames)  # the run measured its text shift on these
    images = torch.stack([x for x, _ in ImageDataset(base.train[::2], eval_transform(32))])
    profile = measure_shifts(loaded.method, [images])
    assert profile.vision == pytest.approx(shift["vision"], rel=1e-5)
    assert profile.text == pytest.approx(shift["text"], rel=1e-5)
    quiet = run(_cfg(data_root, tmp_path / "runs2", method="restore_m", **{"shift_images": 0}))
    assert "shift" not in quiet.metrics


def test_existing_runs_are_resumed_or_overwritten_only_when_asked(data_root, tmp_path):
    out = tmp_path / "runs"
    first = run(_cfg(data_root, out, protocol="train"))
    with pytest.raises(ConfigError, match="already holds a finished run") as info:
        run(_cfg(data_root, out, protocol="train"))
    assert "--resume" in info.value.hint and "--overwrite" in info.value.hint
    again = run(_cfg(data_root, out, protocol="train"), resume=True)  # finished: re-reported, not re-run
    assert again.metrics == first.metrics and again.run_id == first.run_id
    assert len(_rows(out / "results.sqlite")) == 1
    fresh = run(_cfg(data_root, out, protocol="train"), overwrite=True)
    assert fresh.run_id != first.run_id and fresh.metrics == first.metrics  # same seed: same result


def test_a_diverging_run_is_recorded_as_failed(data_root, tmp_path):
    out = tmp_path / "runs"
    cfg = _cfg(data_root, out, protocol="train", overrides=["optim.lr=1e30", "optim.warmup_epochs=0"])
    with pytest.raises(TrainingError, match="the loss became"):
        run(cfg)
    (row,) = _rows(out / "results.sqlite")
    assert row.status == "failed" and "the loss became" in row.error
    run_dir = next(out.glob("train/dtd/coop/*"))
    assert json.loads((run_dir / "run.json").read_text())["status"] == "failed"
    assert "failed: the loss became" in (run_dir / "log.txt").read_text()


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        ({"data.dataset": "eurosat"}, DataError, "folder"),  # not generated under the root
        ({"model.backbone": "random:ViT-X/99"}, ConfigError, "unknown CLIP architecture"),
        ({"model.backbone": "./no/such/weights.pt"}, ConfigError, "does not exist"),
        ({"device": "tpu"}, ConfigError, "unknown device"),
    ],
)
def test_validation_errors_write_nothing(data_root, tmp_path, change, error, message):
    out = tmp_path / "runs"
    with pytest.raises(error, match=message):
        run(_cfg(data_root, out, **change))
    assert not out.exists()


def test_zero_shot_run_has_no_training(data_root, tmp_path):
    result = run(_cfg(data_root, tmp_path / "runs", method="zeroshot", **{"optim.epochs": None}))
    assert result.timings["steps"] == 0 and not (result.run_dir / "checkpoints").exists()
    assert set(result.metrics) == {"base", "novel", "hm"}
    assert (result.run_dir / "model.safetensors").is_file()  # the method's config (and no tensors)


def test_backbone_settings(tmp_path):
    from restore.clip import build_model, get_config
    from restore.engine.backbone import backbone_label, check_backbone, load_backbone, register_backbone

    a, b = load_backbone("random:tiny"), load_backbone("random:tiny")
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())  # one fixed random backbone
    assert not any(p.requires_grad for p in a.parameters()) and not a.training
    assert backbone_label("random:tiny", a) == "random-tiny"
    register_backbone("toy", lambda: build_model(get_config("tiny")))
    check_backbone("toy")
    assert backbone_label("toy", load_backbone("toy")) == "toy-tiny"
    with pytest.raises(ConfigError, match="not a known architecture"):
        check_backbone("ViT-Q/7")


def test_a_backbone_from_a_weights_file_runs_like_the_same_weights_in_memory(data_root, tmp_path):
    import restore.clip
    from restore.engine.backbone import load_backbone

    weights = restore.clip.save_clip(load_backbone("random:tiny"), tmp_path / "tiny.safetensors")
    in_memory = run(_cfg(data_root, tmp_path / "a", protocol="train"))
    from_file = run(_cfg(data_root, tmp_path / "b", protocol="train", **{"model.backbone": str(weights)}))
    assert from_file.metrics["test"] == in_memory.metrics["test"]
    (row,) = _rows(tmp_path / "b" / "results.sqlite")
    assert row.backbone == "tiny"


def test_restore_data_is_the_data_root_of_a_run_that_names_none(data_root, tmp_path, monkeypatch):
    from restore.engine.plan import plan_run

    config = {"method": "coop", "protocol": "b2n", "data": {"dataset": "dtd", "workers": 0},
              "model": {"backbone": "random:tiny"}, "out": str(tmp_path / "runs")}  # fmt: skip
    monkeypatch.delenv("RESTORE_DATA", raising=False)
    with pytest.raises(ConfigError, match="no data root given"):
        plan_run(config)
    monkeypatch.setenv("RESTORE_DATA", str(data_root))
    plan = plan_run(config)
    assert plan.config.data.root == data_root and len(plan.data.train.train) == 3 * 8  # 3 base classes


@pytest.mark.parametrize(("protocol", "command"), [("b2n", "restore run b2n"), ("train", "restore train")])
def test_config_yaml_names_the_command_that_repeats_the_run(tmp_path, protocol, command):
    from restore.engine.run_config import load_run_config
    from restore.engine.run_dir import read_run_config, write_config

    cfg = load_run_config(flags={"method": "coop", "protocol": protocol, "data.dataset": "dtd"})
    write_config(tmp_path, cfg)
    first = (tmp_path / "config.yaml").read_text().splitlines()[0]
    assert first == f"# resolved run config: `{command} --config config.yaml` repeats this run"
    assert read_run_config(tmp_path).hash() == cfg.hash()
