"""Run by test_failures.py inside `unshare --mount` (a private mount namespace): real full and read-only file
systems. Writes what it saw to WORK/report.json for the test to check.

    python -m tests.reliability.failures_child full-eval WORK DATA_ROOT
    python -m tests.reliability.failures_child read-only WORK DATA_ROOT
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

from tests.reliability.disk_child import fill
from tests.reliability.helpers import TINY, cli, db_rows, errors

ARGS = ["train", "-m", "coop", "-d", "dtd", "--epochs", 2, "--batch-size", 4, "--shots", 2, "--seed", 5, *TINY]


def _result(r) -> dict:
    return {"exit": r.exit_code, "errors": errors(r.output), "output": r.output}


def _state(run_dir: Path, db: Path) -> dict:
    return {
        "run_json": json.loads((run_dir / "run.json").read_text()).get("status"),
        "rows": [{"status": r.status, "error": r.error, "run_id": r.run_id} for r in db_rows(db)],
    }


def full_eval(work: Path, data: Path) -> dict:
    """The disk (holding the run directory and the database) fills up while the run evaluates."""
    small = work / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(small)], check=True)
    import restore.engine.runs as runs

    real = runs._evaluate_all
    fillers: list[Path] = []

    def fill_then_evaluate(*args, **kwargs):
        fillers.append(fill(small))
        return real(*args, **kwargs)

    runs._evaluate_all = fill_then_evaluate
    run_dir, db = small / "run", small / "results.sqlite"
    failed = cli(*ARGS, "-r", data, "--run-dir", run_dir, "--db", db)
    runs._evaluate_all = real
    report = {"failed": _result(failed), "after_failure": _state(run_dir, db)}
    report["leftovers"] = sorted(p.name for p in run_dir.iterdir())
    fillers[0].unlink()  # space freed: --resume continues the run
    resumed = cli(*ARGS, "-r", data, "--run-dir", run_dir, "--db", db, "--resume")
    report["resumed"] = _result(resumed)
    report["after_resume"] = _state(run_dir, db)
    report["metrics"] = json.loads((run_dir / "metrics.json").read_text())["metrics"]
    torch.save(torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["learnable"], work / "learnable.pt")
    return report


def read_only(work: Path, data: Path) -> dict:
    """A results database and run folders on a file system that became read-only (a backup, a mounted
    share): the commands that only read them work; a run that must write says so with a hint."""
    ro = work / "ro"
    ran = cli(*ARGS, "-r", data, "--out", ro / "runs", "--db", ro / "results.sqlite")
    assert ran.exit_code == 0, ran.output
    (work / "grid.yaml").write_text(json.dumps({
        "protocols": ["train"], "methods": ["coop"], "datasets": ["dtd"], "shots": [2], "seeds": [5, 6],
        "set": {"model.backbone": "random:tiny", "data.root": str(data), "data.workers": 0, "optim.epochs": 2,
                "data.batch_size": 4, "data.eval_batch_size": 16, "shift_images": 4},
    }))  # fmt: skip
    subprocess.run(["mount", "--bind", str(ro), str(ro)], check=True)
    subprocess.run(["mount", "-o", "remount,bind,ro", str(ro)], check=True)
    before = sorted(str(p.relative_to(ro)) for p in ro.rglob("*"))
    db = ro / "results.sqlite"
    return {
        "files": before,
        "report": _result(cli("report", "--db", db)),
        "runs": _result(cli("results", "runs", "--db", db)),
        "dry_run": _result(cli("sweep", work / "grid.yaml", "--dry-run", "--db", db, "--out", ro / "runs")),
        "run_out": _result(cli(*ARGS, "-r", data, "--seed", 7, "--out", ro / "runs", "--db", "none")),
        "files_after": sorted(str(p.relative_to(ro)) for p in ro.rglob("*")),
    }


def main(mode: str, work: Path, data: Path) -> None:
    torch.set_num_threads(1)
    report = {"full-eval": full_eval, "read-only": read_only}[mode](work, data)
    (work / "report.json").write_text(json.dumps(report, indent=1, default=str))


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]))
