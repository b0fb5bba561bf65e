"""`restore world ...` through Typer's test runner."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from restore.world.pretrain import PretrainConfig
from restore.world.weights import load_clip, read_metadata
from restore.world.world_commands import app

runner = CliRunner()


def test_tasks_command_generates_and_lists(tmp_path):
    result = runner.invoke(app, ["tasks", "shapes", "--root", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "shapes" in result.output and "12 classes" in result.output
    assert (tmp_path / "shapes" / "split_world_Shapes.json").exists()


@pytest.mark.integration
def test_pretrain_command_writes_loadable_weights_config_and_record_then_a_card(tmp_path, tiny_size):
    config = tmp_path / "tiny.yaml"
    config.write_text(PretrainConfig(steps=3, batch_size=8, eval_every=2, eval_per_class=2, model=tiny_size).to_yaml())
    out = tmp_path / "run"
    result = runner.invoke(app, ["pretrain", "--config", str(config), "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "step      2" in result.output and "final zero-shot" in result.output
    model = load_clip(out / "world_clip.safetensors")
    assert model.cfg == tiny_size.clip_config()
    meta = read_metadata(out / "world_clip.safetensors")
    assert PretrainConfig.from_dict(json.loads(meta["restore_world_pretrain"])) == PretrainConfig.from_yaml(
        out / "world_clip.yaml"
    )
    record = json.loads((out / "world_clip.json").read_text())
    assert record["config"]["steps"] == 3 and len(record["history"]) == 3  # steps 0, 2, 3
    result = runner.invoke(app, ["card", "--record", str(out / "world_clip.json")])
    assert result.exit_code == 0, result.output
    card = (out / "MODEL_CARD.md").read_text()
    assert "SYNTHETIC" in card
    for name, acc in record["zero_shot"].items():
        assert f"| {name} |" in card and f"{100 * acc:.1f}" in card


def test_samples_command_writes_a_grid_and_captions(tmp_path):
    out = tmp_path / "grid.png"
    result = runner.invoke(app, ["samples", "--out", str(out), "--count", "6", "--seed", "1"])
    assert result.exit_code == 0, result.output
    from PIL import Image

    assert Image.open(out).size == (3 * 48 * 3, 2 * 48 * 3)
    assert len([line for line in result.output.splitlines() if line.strip()[:1].isdigit()]) == 6


def test_user_errors_are_restore_errors_not_tracebacks(tmp_path):
    from restore.errors import CheckpointError, ConfigError

    result = runner.invoke(app, ["pretrain", "--config", str(tmp_path / "none.yaml")])
    assert isinstance(result.exception, ConfigError) and "no pretraining config" in str(result.exception.message)
    result = runner.invoke(app, ["evaluate", "--weights", str(tmp_path / "none.safetensors")])
    assert isinstance(result.exception, CheckpointError)
    result = runner.invoke(app, ["card", "--record", str(tmp_path / "none.json")])
    assert isinstance(result.exception, CheckpointError)
