"""A full disk while saving fails clearly and keeps the previous checkpoint: with a failing file object (any
machine), and for a whole run on a real full file system (a 2 MiB tmpfs in a private mount namespace, where
the machine allows one)."""

from __future__ import annotations

import builtins
import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import restore
from restore.engine.progress import RunLog
from restore.engine.train_checkpoint import load_training_checkpoint
from restore.engine.trainer import Trainer, TrainSettings
from restore.errors import RestoreError
from restore.methods import build_method, make_config
from tests.engine.fakes import Blobs
from tests.reliability.helpers import TINY, cli

REPO = Path(__file__).resolve().parents[2]
SRC = Path(restore.__file__).resolve().parents[1]  # the code under test, wherever it was imported from


class _Full:
    """A writable file that takes `room` bytes and then fails as a full disk does."""

    def __init__(self, f, room: int) -> None:
        self._f, self._room = f, room

    def write(self, data) -> int:
        if len(data) > self._room:
            self._f.write(bytes(data[: self._room]))
            self._room = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._room -= len(data)
        return self._f.write(data)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


def _full_disk(monkeypatch, room: int = 100) -> None:
    """Every file restore.fileio writes fills up after `room` bytes."""

    def fake_open(file, mode="r", *args, **kwargs):
        f = builtins.open(file, mode, *args, **kwargs)  # noqa: SIM115 (the caller closes it)
        return _Full(f, room) if "w" in mode else f

    monkeypatch.setattr("restore.fileio.open", fake_open, raising=False)


def _trainer(tiny_clip, folder: Path, epochs: int = 3) -> Trainer:
    torch.manual_seed(11)
    method = build_method(make_config("coop", {}), tiny_clip, [f"class {c}" for c in "abcdef"], "DescribableTextures")
    settings = TrainSettings(epochs=epochs, lr=0.01, batch_size=8, seed=3)
    return Trainer(method, Blobs(), settings, checkpoint=folder / "last.pt", config_hash="h", identity={})


def test_a_full_disk_while_saving_keeps_the_previous_checkpoint(tiny_clip, tmp_path, monkeypatch):
    t = _trainer(tiny_clip, tmp_path / "run")
    t.fit(until_epoch=1)
    before = (tmp_path / "run" / "last.pt").read_bytes()
    _full_disk(monkeypatch)
    with pytest.raises(RestoreError) as info:
        t.fit()
    assert info.value.message == (
        f"could not write {tmp_path / 'run' / 'last.pt'}: No space left on device; "
        "the previous version of the file is unchanged"
    )
    assert "free disk space" in info.value.hint and "resume" in info.value.hint
    assert (tmp_path / "run" / "last.pt").read_bytes() == before  # untouched, and still a good checkpoint
    assert load_training_checkpoint(tmp_path / "run" / "last.pt")["epoch"] == 1
    assert os.listdir(tmp_path / "run") == ["last.pt"]  # the partial temporary file is gone

    monkeypatch.undo()  # space freed: resuming ends where an uninterrupted run ends
    resumed = _trainer(tiny_clip, tmp_path / "run")
    resumed.fit(resume=True)
    whole = _trainer(tiny_clip, tmp_path / "whole")
    whole.fit()
    for k, v in whole.method.learnable_state_dict().items():
        assert torch.equal(resumed.method.learnable_state_dict()[k], v), k


def test_the_log_file_on_a_full_disk_does_not_stop_the_run(tmp_path, capsys):
    log = RunLog(tmp_path / "log.txt", quiet=True)
    log.info("first line")
    real = log._file

    class Failing:
        def write(self, text):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def close(self):
            real.close()

    log._file = Failing()  # type: ignore[assignment]
    log.info("a line that cannot be written")
    log.info("and the next")
    log.close()
    err = capsys.readouterr().err
    assert err.count("warning: cannot write the log file") == 1 and "No space left on device" in err
    assert isinstance(log.write_error, OSError)
    assert (tmp_path / "log.txt").read_text().endswith("first line\n")


def _can_mount_privately() -> bool:
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        return False
    probe = "mkdir -p /tmp/.restore-probe-$$ && mount -t tmpfs -o size=64k tmpfs /tmp/.restore-probe-$$"
    result = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", probe],
                            capture_output=True)  # fmt: skip
    subprocess.run(["sh", "-c", "rmdir /tmp/.restore-probe-* 2>/dev/null"], check=False)
    return result.returncode == 0


@pytest.mark.integration
def test_a_run_on_a_disk_that_fills_up_fails_clearly_and_resumes(shared_root, tmp_path):
    if not _can_mount_privately():
        pytest.skip("no private mount namespace here (needs `unshare --mount` and tmpfs; e.g. root in a container)")
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{REPO}", "OMP_NUM_THREADS": "1"}
    child = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", sys.executable, "-m", "tests.reliability.disk_child",
         str(tmp_path), str(shared_root)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert child.returncode == 0, child.stdout + child.stderr
    report = json.loads((tmp_path / "report.json").read_text())

    failed = report["failed"]
    assert failed["exit"] == 2 and "Traceback" not in failed["output"], failed["output"]
    (line,) = failed["errors"]
    assert "could not write" in line and "last.pt: No space left on device" in line
    assert "the previous version of the file is unchanged" in line
    assert report["checkpoint_epoch"] == 1 and report["leftovers"] == []
    assert report["rows"] == [{"status": "failed", "error": line.removeprefix("error: ")}]
    # run.json lies on the full disk: the room the run kept aside (restore.engine.reserve) lets it say so.
    assert report["run_json"]["status"] == "failed" and report["run_json"]["error"] == line.removeprefix("error: ")

    full = report["full"]
    assert full["exit"] == 2 and "Traceback" not in full["output"], full["output"]
    (line,) = full["errors"]
    assert "No space left on device" in line or "disk is full" in line

    assert report["resumed"]["exit"] == 0, report["resumed"]["output"]
    assert report["rows_after"] == [{"status": "finished", "error": None}]
    # The same run, never interrupted, on a disk with room.
    whole = cli("train", "-m", "coop", "-d", "dtd", "--epochs", 3, "--batch-size", 4, "--shots", 2, "--seed", 5, *TINY,
                "-r", shared_root, "--run-dir", tmp_path / "whole", "--db", "none")  # fmt: skip
    assert whole.exit_code == 0, whole.output
    expected = load_training_checkpoint(tmp_path / "whole" / "checkpoints" / "last.pt")["learnable"]
    got = torch.load(tmp_path / "learnable.pt", weights_only=True)
    assert set(got) == set(expected) and all(torch.equal(got[k], v) for k, v in expected.items())
    assert report["metrics"] == json.loads((tmp_path / "whole" / "metrics.json").read_text())["metrics"]
