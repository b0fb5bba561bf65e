"""A training process killed with SIGKILL in the middle of an epoch, then resumed with --resume, ends with
exactly the learnable state of an uninterrupted run (CPU, same seed)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.engine.fakes import make_tree

SRC = Path(__file__).resolve().parents[2] / "src"
EPOCHS, BATCH, CLASSES, PER_CLASS = 3, 2, 6, 12
STEPS = CLASSES * PER_CLASS // BATCH


def _args(root: Path, out: Path, run_dir: Path, *extra: str) -> list[str]:
    return [
        "train", "--method", "promptsrc", "--dataset", "dtd", "--root", str(root), "--backbone", "random:tiny",
        "--epochs", str(EPOCHS), "--batch-size", str(BATCH), "--shots=-1", "--workers", "0", "--out", str(out),
        "--run-dir", str(run_dir), "--quiet", "--set", "log_every=1", "--seed", "4", *extra,
    ]  # fmt: skip


def _train(*args: str | Path) -> subprocess.Popen:
    """`restore train` in its own process, one thread (as the in-process run of the test)."""
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "restore", *_args(*args)]  # type: ignore[arg-type]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for_step(proc: subprocess.Popen, log: Path, epoch: int, step: int, timeout: float = 180) -> None:
    pattern = re.compile(rf"epoch {epoch}/{EPOCHS} step (\d+)/")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the run ended before epoch {epoch} step {step}:\n{proc.stdout.read()}")
        text = log.read_text() if log.exists() else ""
        if any(int(m.group(1)) >= step for m in pattern.finditer(text)):
            return
        time.sleep(0.005)
    pytest.fail(f"no epoch {epoch} step {step} within {timeout}s")


@pytest.mark.integration
def test_sigkill_mid_epoch_then_resume_equals_an_uninterrupted_run(tmp_path):
    root = make_tree(tmp_path / "data", num_classes=CLASSES, per_class=(PER_CLASS, 1, 1))
    out = tmp_path / "runs"
    whole, killed = out / "whole", out / "killed"
    victim = _train(root, out, killed, "--db", str(tmp_path / "killed.sqlite"))
    try:
        _wait_for_step(victim, killed / "log.txt", epoch=2, step=3)
        victim.send_signal(signal.SIGKILL)
        victim.wait(30)
    finally:
        if victim.poll() is None:
            victim.kill()
    assert victim.returncode == -signal.SIGKILL
    state = torch.load(killed / "checkpoints" / "last.pt", weights_only=True)
    log = (killed / "log.txt").read_text()
    assert state["epoch"] == 1, "the kill should land inside epoch 2"
    assert f"epoch 2/{EPOCHS} step {STEPS}/" not in log and not (killed / "metrics.json").exists()

    resumed = _train(root, out, killed, "--db", str(tmp_path / "killed.sqlite"), "--resume")
    # Meanwhile, the same run uninterrupted (in this process: the trainer reseeds everything per epoch, so
    # nothing of the test process's state leaks into it).
    from restore.cli import main

    assert main(_args(root, out, whole, "--db", str(tmp_path / "whole.sqlite"))) == 0
    output, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, output
    assert "resumed from" in (killed / "log.txt").read_text()

    a = torch.load(whole / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(killed / "checkpoints" / "last.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == EPOCHS and a["global_step"] == b["global_step"] == EPOCHS * STEPS
    assert set(a["learnable"]) == set(b["learnable"])
    for k in a["learnable"]:
        assert torch.equal(a["learnable"][k], b["learnable"][k]), k
    for k, v in load_file(whole / "model.safetensors").items():
        assert torch.equal(v, load_file(killed / "model.safetensors")[k]), k
    metrics = [json.loads((d / "metrics.json").read_text())["metrics"] for d in (whole, killed)]
    assert metrics[0] == metrics[1]
