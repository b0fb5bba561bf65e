"""Fixtures for the scale tests: generated datasets and the environment of child processes."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a process a test starts: this checkout's code, one thread."""
    path = os.pathsep.join([str(SRC), *filter(None, [os.environ.get("PYTHONPATH")])])
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **extra}


PYTHON = sys.executable


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """A generated DTD (4 classes, 6/1/3 images per class, 32 px) in CoOp's layout."""
    from restore.data.fake import make_dataset_tree

    root = tmp_path_factory.mktemp("data")
    make_dataset_tree(root, "dtd", num_classes=4, per_class=(6, 1, 3), size=32, seed=0)
    return root


def sweep_grid(root: Path, *, failing: bool = True) -> dict:
    """Four runs of the tiny model (coop and maple x seeds 1, 2; one epoch, two shots) and, with
    ``failing``, a fifth cell whose dataset folder is not under the data root: it passes the sweep's
    checks (EuroSAT is a known dataset) and fails in the run, on the machine that looks for the data."""
    grid = {
        "name": "tiny",
        "protocols": ["b2n"],
        "methods": ["coop", "maple"],
        "datasets": ["dtd"],
        "shots": [2],
        "seeds": [1, 2],
        "set": {
            "model.backbone": "random:tiny",
            "data.root": str(root),
            "data.workers": 0,
            "data.batch_size": 4,
            "data.eval_batch_size": 8,
            "optim.epochs": 1,
            "shift_images": 4,
        },
    }
    if failing:
        grid["include"] = [{"method": "coop", "dataset": "eurosat", "seed": 1}]
    return grid


def check_sweep_database(db: Path, out: Path, *, failed_attempts: int | None) -> None:
    """4 finished rows whose metrics equal the run directories' metrics.json; the failing cell's row (one,
    whatever the retries) says what was missing."""
    import json

    from restore.results import open_results

    with open_results(db, create=False) as store:
        rows = store.query()
    finished = [r for r in rows if r.status == "finished"]
    assert sorted((r.method, r.seed) for r in finished) == [("coop", 1), ("coop", 2), ("maple", 1), ("maple", 2)]
    for r in finished:
        saved = json.loads((Path(r.run_dir) / "metrics.json").read_text())
        assert Path(r.run_dir).is_relative_to(out.resolve())
        assert r.metrics["base"] == saved["metrics"]["base"] and r.metrics["novel"] == saved["metrics"]["novel"]
        assert r.run_id == saved["run_id"] and r.dataset == "dtd" and r.shots == 2 and r.backbone == "random-tiny"
    failed = [r for r in rows if r.status == "failed"]
    if failed_attempts is None:
        assert not failed
        return
    assert len(failed) == 1 and failed[0].dataset == "eurosat"
    assert "EuroSAT: folder" in failed[0].error and "eurosat does not exist" in failed[0].error
