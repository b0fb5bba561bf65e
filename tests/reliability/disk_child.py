"""Run by test_disk.py inside `unshare --mount`: a real full disk (a 2 MiB tmpfs, private to this process)
under a training run. Writes what it saw to WORK/report.json for the test to check.

    python -m tests.reliability.disk_child WORK DATA_ROOT
"""

from __future__ import annotations

import errno
import json
import subprocess
import sys
from pathlib import Path

import torch

from tests.reliability.helpers import TINY, cli, db_rows, errors

ARGS = ["train", "-m", "coop", "-d", "dtd", "--epochs", 3, "--batch-size", 4, "--shots", 2, "--seed", 5, *TINY]


def fill(folder: Path) -> Path:
    """Write a file until the file system is full; leave it there."""
    filler = folder / "filler"
    block = b"\0" * 4096
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(block)
        except OSError as e:
            assert e.errno == errno.ENOSPC, e
        for size in (512, 64, 8, 1):  # the last partial block too
            try:
                while True:
                    f.write(b"\0" * size)
            except OSError:
                pass
    return filler


def main(work: Path, data: Path) -> None:
    torch.set_num_threads(1)
    small = work / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(small)], check=True)
    report: dict = {}

    # 1. The disk fills up after the first epoch's checkpoint: the second epoch's save fails.
    import restore.engine.trainer as trainer

    real_save = trainer.save_training_checkpoint
    fillers: list[Path] = []

    def save_then_fill(path, state):
        out = real_save(path, state)
        if not fillers:
            fillers.append(fill(small))
        return out

    trainer.save_training_checkpoint = save_then_fill
    run_dir, db = small / "run", work / "results.sqlite"
    failed = cli(*ARGS, "-r", data, "--run-dir", run_dir, "--db", db)
    trainer.save_training_checkpoint = real_save
    report["failed"] = {"exit": failed.exit_code, "errors": errors(failed.output), "output": failed.output}
    from restore.engine.train_checkpoint import load_training_checkpoint

    report["checkpoint_epoch"] = int(load_training_checkpoint(run_dir / "checkpoints" / "last.pt")["epoch"])
    report["leftovers"] = sorted(p.name for p in (run_dir / "checkpoints").iterdir() if p.name != "last.pt")
    report["rows"] = [{"status": r.status, "error": r.error} for r in db_rows(db)]
    report["run_json"] = json.loads((run_dir / "run.json").read_text())

    # 2. With the disk still full, a new run on it fails clearly (its database on the full disk too). The first
    #    run gave back the room it kept to record its failure (restore.engine.reserve): fill that too.
    fill(small)
    other = cli(*ARGS, "-r", data, "--run-dir", small / "other", "--db", small / "other.sqlite")
    report["full"] = {"exit": other.exit_code, "errors": errors(other.output), "output": other.output}

    # 3. Space freed: --resume finishes the run.
    fillers[0].unlink()
    resumed = cli(*ARGS, "-r", data, "--run-dir", run_dir, "--db", db, "--resume")
    report["resumed"] = {"exit": resumed.exit_code, "output": resumed.output}
    if resumed.exit_code == 0:
        torch.save(load_training_checkpoint(run_dir / "checkpoints" / "last.pt")["learnable"], work / "learnable.pt")
        report["metrics"] = json.loads((run_dir / "metrics.json").read_text())["metrics"]
        report["rows_after"] = [{"status": r.status, "error": r.error} for r in db_rows(db)]
    (work / "report.json").write_text(json.dumps(report, indent=1, default=str))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
