"""Numerical faults: a NaN or infinite loss stops the run at that step, says where and what the last finite
loss was, marks the run failed in the database, and keeps the last good checkpoint (loadable, resumable)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from restore.engine.train_checkpoint import load_training_checkpoint
from restore.engine.trainer import Trainer, TrainSettings
from restore.errors import TrainingError
from restore.methods import build_method, make_config
from tests.engine.fakes import Blobs
from tests.reliability.helpers import TINY, cli, db_rows, errors

STEPS = 6  # Blobs(): 48 images / batch 8


def _trainer(tiny_clip, folder, method="coop"):
    torch.manual_seed(11)
    m = build_method(make_config(method, {}), tiny_clip, [f"class {c}" for c in "abcdef"], "DescribableTextures")
    settings = TrainSettings(epochs=3, lr=0.01, batch_size=8, seed=3)
    return Trainer(m, Blobs(), settings, checkpoint=folder / "last.pt", config_hash="h", identity={})


class Poison:
    """Wraps a method's loss: at training step `at` (1-based, counted over the whole run) it becomes `value`."""

    def __init__(self, method, at: int, value: float) -> None:
        self.real, self.at, self.value = method.compute_loss, at, value
        self.losses: list[float] = []
        method.compute_loss = self

    def __call__(self, out, labels):
        loss, logs = self.real(out, labels)
        if len(self.losses) + 1 == self.at:
            loss = loss * self.value if math.isinf(self.value) else loss + self.value
        self.losses.append(float(loss))
        return loss, logs


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
def test_a_non_finite_loss_stops_at_its_step_with_the_last_finite_loss(tiny_clip, tmp_path, value):
    t = _trainer(tiny_clip, tmp_path)
    poison = Poison(t.method, at=STEPS + 4, value=value)  # epoch 2, step 4
    with pytest.raises(TrainingError) as info:
        t.fit()
    shown = "nan" if math.isnan(value) else str(value)
    last = poison.losses[-2]
    assert info.value.message.startswith(f"the loss became {shown} at epoch 2, step 4 (global step {STEPS + 4}) [")
    assert f"the last finite loss was {last:.4f} at step {STEPS + 3}" in info.value.message
    assert f"the checkpoint of epoch 1 is kept at {tmp_path / 'last.pt'}" in info.value.message
    assert "lower the learning rate" in info.value.hint
    assert info.value.exit_code == 3

    state = load_training_checkpoint(tmp_path / "last.pt")
    assert state["epoch"] == 1 and state["global_step"] == STEPS
    assert all(torch.isfinite(v).all() for v in state["learnable"].values())

    # The cause removed, the kept checkpoint resumes to the end an uninterrupted run reaches.
    resumed = _trainer(tiny_clip, tmp_path)
    resumed.fit(resume=True)
    whole = _trainer(tiny_clip, tmp_path / "whole")
    whole.fit()
    for k, v in whole.method.learnable_state_dict().items():
        assert torch.equal(resumed.method.learnable_state_dict()[k], v), k


def test_a_diverging_run_fails_with_exit_code_3_and_keeps_the_last_good_epoch(shared_root, tmp_path):
    # Epoch 1 warms up at 1e-5; epoch 2 jumps to a learning rate of 1e30 and the loss overflows.
    out, db = tmp_path / "runs", tmp_path / "results.sqlite"
    result = cli("train", "-m", "coop", "-d", "dtd", "-r", shared_root, "-o", out, "--db", db, "--epochs", 3,
                 "--batch-size", 4, "--shots", 4, "--lr", 1e30, *TINY)  # fmt: skip
    assert result.exit_code == 3 and "Traceback" not in result.output, result.output
    (line,) = errors(result.output)
    assert "the loss became" in line and "at epoch 2, step" in line and "the last finite loss was" in line
    assert "the checkpoint of epoch 1 is kept at" in line
    (run_dir,) = out.glob("train/dtd/coop/*")
    assert f"kept at {run_dir / 'checkpoints' / 'last.pt'}" in line

    (row,) = db_rows(db)
    assert row.status == "failed" and row.error == line.removeprefix("error: ")
    assert json.loads((run_dir / "run.json").read_text())["status"] == "failed"
    assert not (run_dir / "metrics.json").exists() and not (run_dir / "model.safetensors").exists()
    state = load_training_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert state["epoch"] == 1 and all(torch.isfinite(v).all() for v in state["learnable"].values())
    assert "stopped: the loss became" in (run_dir / "log.txt").read_text()
