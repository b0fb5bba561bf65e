"""SIGKILL at 16 named points spread over a base-to-novel run — training steps, checkpoint renames,
evaluation batches, the feature-shift profile, metrics.json, the database's transactions, run.json — always
leaves a database that opens with complete rows and no corrupt file, and `--resume` then finishes the run to
exactly the state of a run never interrupted: the same learnable tensors, metrics and one finished row.

The victims are forked from the test process (warm imports: about a second each) and install their kill
point after the fork (tests/reliability/killpoints.py), then run the real command line.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch

from restore.engine.run_dir import read_run_config
from restore.engine.train_checkpoint import load_training_checkpoint
from restore.methods.model_file import read_method
from tests.reliability.helpers import TINY, db_rows
from tests.reliability.killpoints import POINTS, KillPoint

if not hasattr(os, "fork"):
    pytest.skip("the kill-point victims are forked processes", allow_module_level=True)


def _argv(root: Path, out: Path, *extra: str) -> list[str]:
    return [str(a) for a in ("run", "b2n", "-m", "promptsrc", "-d", "dtd", "-r", root, "-o", out, "--db",
                             out / "results.sqlite", "--epochs", 3, "--batch-size", 4, "--shots", 4, "--seed", 2,
                             *TINY, "--set", "data.eval_batch_size=4", *extra)]  # fmt: skip


def _main(argv: list[str]) -> int:
    from restore.cli import main

    return main(argv)


def _victim(point: KillPoint, argv: list[str], log: Path) -> int:
    """Run the command in a forked child that kills itself at `point`; the child's wait status."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 70
        try:
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            point.install()
            code = _main(argv)
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return status


def _run_dir(out: Path) -> Path | None:
    found = list(out.glob("b2n/dtd/promptsrc/*"))
    return found[0] if found else None


def _check_nothing_is_corrupt(out: Path) -> None:
    """What a kill may leave: complete rows, and files that are either absent or whole."""
    db = out / "results.sqlite"
    if db.exists():
        for row in db_rows(db):  # opens, and every row's JSON parses and validates
            assert row.status in ("running", "finished", "failed", "interrupted")
            if row.status == "finished":
                assert {"base", "novel", "hm"} <= set(row.metrics)
    run_dir = _run_dir(out)
    if run_dir is None:
        return
    if (run_dir / "config.yaml").exists():
        read_run_config(run_dir)
    for name in ("run.json", "metrics.json"):
        if (run_dir / name).exists():
            json.loads((run_dir / name).read_text())
    if (run_dir / "checkpoints" / "last.pt").exists():
        assert load_training_checkpoint(run_dir / "checkpoints" / "last.pt")["epoch"] in (1, 2, 3)
    if (run_dir / "model.safetensors").exists():
        read_method(run_dir / "model.safetensors")


def _final_state(out: Path) -> dict:
    run_dir = _run_dir(out)
    assert run_dir is not None
    rows = db_rows(out / "results.sqlite")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {
        "learnable": load_training_checkpoint(run_dir / "checkpoints" / "last.pt")["learnable"],
        "model": read_method(run_dir / "model.safetensors").state,
        "metrics": metrics["metrics"],
        "history": [{k: v for k, v in h.items() if k != "seconds"} for h in metrics["history"]],
        "rows": [(r.status, r.metrics, r.run_dir) for r in rows],
        "run_json": json.loads((run_dir / "run.json").read_text())["status"],
    }


@pytest.fixture(scope="module")
def reference(shared_root, tmp_path_factory):
    """The same run, never interrupted."""
    out = tmp_path_factory.mktemp("reference")
    assert _main(_argv(shared_root, out)) == 0
    return _final_state(out)


def _same(state: dict, ref: dict) -> None:
    for part in ("learnable", "model"):
        assert set(state[part]) == set(ref[part]), part
        for k, v in ref[part].items():
            assert torch.equal(state[part][k], v), f"{part}: {k}"
    assert state["metrics"] == ref["metrics"]
    assert state["history"] == ref["history"]
    assert state["run_json"] == "finished"
    ((status, metrics, run_dir),) = state["rows"]  # one row: no orphan from the killed attempt
    assert status == "finished" and metrics == ref["metrics"] and run_dir is not None


def _params() -> list:
    return [pytest.param(p, id=p.name) for p in POINTS]


@pytest.mark.integration
@pytest.mark.parametrize("point", _params())
def test_sigkill_then_resume_ends_where_an_uninterrupted_run_ends(point, reference, shared_root, tmp_path):
    out = tmp_path / "runs"
    status = _victim(point, _argv(shared_root, out), tmp_path / "victim.log")
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, (
        f"the run did not reach {point} (exit status {status}):\n{(tmp_path / 'victim.log').read_text()}"
    )
    _check_nothing_is_corrupt(out)
    assert _main(_argv(shared_root, out, "--resume")) == 0
    _same(_final_state(out), reference)


def test_the_kill_points_cover_training_evaluation_files_and_the_database():
    stages = [p.stage for p in POINTS]
    assert len(POINTS) >= 10 and {"training", "evaluation", "files", "database"} <= set(stages)
    assert len({p.name for p in POINTS}) == len(POINTS)
