"""Issue 18, minor items: Ctrl-C in a terminal reaches the whole process group — the run and its data-loader
workers. The run says once that it is saving, and a second Ctrl-C stops it without Python's `Exception
ignored ... KeyboardInterrupt` noise (the workers ignore SIGINT: the main process shuts them down)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import restore
from tests.engine.fakes import make_tree
from tests.reliability.helpers import TINY
from tests.reliability.test_interrupt import _wait_for

SRC = Path(restore.__file__).resolve().parents[1]
WORKERS = 2


def _ctrl_c_to_the_group(tmp_path: Path, times: int) -> tuple[int, str]:
    root = make_tree(tmp_path / "data", num_classes=4, per_class=(24, 1, 1))
    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "restore", "train", "-m", "coop", "-d", "dtd", "-r", str(root), "--epochs", "3",
               "--batch-size", "4", "--shots", "-1", *map(str, TINY), "--workers", str(WORKERS), "--set",
               "log_every=1", "--run-dir", str(run_dir), "--db", "none"]  # fmt: skip
    # A session of its own: the test can signal its process group as a terminal does, without signalling pytest.
    victim = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        _wait_for(victim, run_dir / "log.txt", r"epoch 1/3 step 3/")
        for _ in range(times):
            os.killpg(victim.pid, signal.SIGINT)
        output, _ = victim.communicate(timeout=120)
    finally:
        if victim.poll() is None:
            os.killpg(victim.pid, signal.SIGKILL)
    return victim.returncode, output


@pytest.mark.integration
def test_ctrl_c_to_the_process_group_says_saving_once(tmp_path):
    code, output = _ctrl_c_to_the_group(tmp_path, 1)
    assert code == 130, output
    assert output.count("interrupt: saving a checkpoint") == 1, output
    assert "Traceback" not in output and "Exception ignored" not in output, output


@pytest.mark.integration
def test_a_double_ctrl_c_to_the_process_group_stops_quietly(tmp_path):
    code, output = _ctrl_c_to_the_group(tmp_path, 2)
    assert code == 130, output
    assert output.count("interrupt: saving a checkpoint") <= 1, output
    assert "Exception ignored" not in output and "Traceback" not in output, output
    assert "KeyboardInterrupt" not in output, output
