"""Ctrl-C (SIGINT) during training: the trainer finishes the step it is in, saves a checkpoint of exactly
that point, and the command exits cleanly with code 130, the run marked interrupted in the database and in
run.json; `--resume` continues from that step to the result of a run never interrupted. A second Ctrl-C
stops at once, keeping the last saved checkpoint."""

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

import restore
from restore.engine.train_checkpoint import load_training_checkpoint
from restore.engine.trainer import Trainer, TrainSettings
from restore.methods import build_method, make_config
from tests.engine.fakes import Blobs
from tests.reliability.helpers import TINY, cli, db_rows

SRC = Path(restore.__file__).resolve().parents[1]  # the code under test, wherever it was imported from
STEPS = 6  # Blobs(): 48 images / batch 8


def _trainer(tiny_clip, folder: Path, method: str = "promptsrc", workers: int = 0) -> Trainer:
    torch.manual_seed(11)
    m = build_method(make_config(method, {}), tiny_clip, [f"class {c}" for c in "abcdef"], "DescribableTextures")
    settings = TrainSettings(epochs=3, lr=0.01, batch_size=8, seed=3, workers=workers)
    return Trainer(m, Blobs(), settings, checkpoint=folder / "last.pt", config_hash="h", identity={})


def _interrupt_at(trainer: Trainer, step: int, times: int = 1) -> None:
    """Deliver SIGINT `times` times to this process while training step `step` (1-based, whole run) computes."""
    real = trainer.method.compute_loss
    calls = [0]

    def compute_loss(out, labels):
        calls[0] += 1
        if calls[0] == step:
            for _ in range(times):
                os.kill(os.getpid(), signal.SIGINT)
        return real(out, labels)

    trainer.method.compute_loss = compute_loss


@pytest.mark.parametrize(("method", "workers"), [("coop", 0), ("promptsrc", 0), ("coop", 2)])
def test_ctrl_c_saves_the_step_it_was_in_and_resume_continues_exactly(tiny_clip, tmp_path, method, workers):
    t = _trainer(tiny_clip, tmp_path / "run", method, workers)
    _interrupt_at(t, STEPS + 4)  # epoch 2, step 4
    before = signal.getsignal(signal.SIGINT)  # not always the default: a shell's background job ignores SIGINT
    with pytest.raises(KeyboardInterrupt):
        t.fit()
    state = load_training_checkpoint(tmp_path / "run" / "last.pt")
    assert (state["epoch"], state["epoch_step"], state["global_step"]) == (1, 4, STEPS + 4)
    assert signal.getsignal(signal.SIGINT) is before  # the handler is put back

    resumed = _trainer(tiny_clip, tmp_path / "run", method, workers)
    result = resumed.fit(resume=True)
    assert result.resumed_from == 1 and result.epochs == 3 and result.steps == 3 * STEPS
    whole = _trainer(tiny_clip, tmp_path / "whole", method, workers)
    reference = whole.fit()
    for k, v in whole.method.learnable_state_dict().items():
        assert torch.equal(resumed.method.learnable_state_dict()[k], v), k
    # The epoch statistics of the interrupted epoch add up over the two processes.
    strip = [{k: v for k, v in h.items() if k != "seconds"} for h in reference.history]
    assert [{k: v for k, v in h.items() if k != "seconds"} for h in result.history] == strip


def test_a_second_ctrl_c_stops_at_once_keeping_the_last_checkpoint(tiny_clip, tmp_path):
    t = _trainer(tiny_clip, tmp_path / "run")
    t.fit(until_epoch=1)
    saved = (tmp_path / "run" / "last.pt").read_bytes()
    _interrupt_at(t, 3, times=2)  # both arrive within one step
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        t.fit()
    assert (tmp_path / "run" / "last.pt").read_bytes() == saved
    assert signal.getsignal(signal.SIGINT) is before


# --- the command line, with a real Ctrl-C from outside ----------------------------------------------------
EPOCHS, CLASSES, PER_CLASS, BATCH = 3, 6, 12, 2
ARGS = ["train", "-m", "promptsrc", "-d", "dtd", "--epochs", EPOCHS, "--batch-size", BATCH, "--shots", -1,
        "--seed", 4, *TINY, "--set", "log_every=1"]  # fmt: skip


def _wait_for(proc: subprocess.Popen, log: Path, pattern: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the run ended before {pattern!r}:\n{proc.stdout.read()}")  # type: ignore[union-attr]
        if log.exists() and re.search(pattern, log.read_text()):
            return
        time.sleep(0.005)
    pytest.fail(f"no {pattern!r} in {log} within {timeout}s")


@pytest.mark.integration
def test_ctrl_c_on_the_command_line_exits_130_marks_the_run_interrupted_and_resumes(tmp_path):
    from tests.engine.fakes import make_tree

    root = make_tree(tmp_path / "data", num_classes=CLASSES, per_class=(PER_CLASS, 1, 1))
    run_dir, db = tmp_path / "run", tmp_path / "results.sqlite"
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "restore", *map(str, ARGS), "-r", str(root), "--run-dir", str(run_dir),
               "--db", str(db)]  # fmt: skip
    victim = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for(victim, run_dir / "log.txt", rf"epoch 2/{EPOCHS} step 3/")
        victim.send_signal(signal.SIGINT)
        output, _ = victim.communicate(timeout=120)
    finally:
        if victim.poll() is None:
            victim.kill()
    assert victim.returncode == 130, output
    assert "interrupted; continue the run with --resume" in output and "Traceback" not in output

    state = load_training_checkpoint(run_dir / "checkpoints" / "last.pt")
    steps = CLASSES * PER_CLASS // BATCH
    assert state["epoch"] == 1 and 3 <= state["epoch_step"] < steps  # saved inside epoch 2, not at its start
    assert state["global_step"] == steps + state["epoch_step"]
    (row,) = db_rows(db)
    assert row.status == "interrupted" and "--resume" in row.error
    assert json.loads((run_dir / "run.json").read_text())["status"] == "interrupted"
    assert "interrupted" in (run_dir / "log.txt").read_text()

    resumed = cli(*ARGS, "-r", root, "--run-dir", run_dir, "--db", db, "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert f"after epoch 1/{EPOCHS}, step {state['epoch_step']}" in (run_dir / "log.txt").read_text()
    whole = cli(*ARGS, "-r", root, "--run-dir", tmp_path / "whole", "--db", "none")
    assert whole.exit_code == 0, whole.output
    a = load_training_checkpoint(tmp_path / "whole" / "checkpoints" / "last.pt")["learnable"]
    b = load_training_checkpoint(run_dir / "checkpoints" / "last.pt")["learnable"]
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    metrics = [json.loads((d / "metrics.json").read_text())["metrics"] for d in (tmp_path / "whole", run_dir)]
    assert metrics[0] == metrics[1]
    (row,) = db_rows(db)
    assert row.status == "finished" and row.metrics == metrics[1]
