"""`restore sweep --root/--set`, and a sweep that stops starting cells after the same failure three times."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import yaml
from rich.console import Console
from typer.testing import CliRunner

from restore.cli import app
from restore.errors import ConfigError
from restore.scale.grid import parse_grid, with_command_line
from restore.scale.sweep import run_sweep
from tests.scale.test_sweep_driver import Scripted

REPO = Path(__file__).resolve().parents[2]
RUNNER = CliRunner()
ENV = {"COLUMNS": "250", "OMP_NUM_THREADS": "1"}


class Recording(Scripted):
    """One run at a time; every run fails with the same error unless the cell's config has a data root."""

    capacity = 1

    def __init__(self) -> None:
        super().__init__()
        self.configs: list[dict] = []

    def submit(self, job) -> None:
        self.configs.append(job.spec["config"])
        super().submit(job)

    def outcome(self, job) -> dict:
        if (job.cell.data.get("data") or {}).get("root") is None and job.cell.dataset == "dtd":
            return {"status": "failed", "error": "no data root given"}
        return super().outcome(job)


def _grid(datasets=("dtd",), seeds=(1, 2, 3)):
    return parse_grid({"methods": ["coop", "cocoop"], "datasets": list(datasets), "seeds": list(seeds),
                       "grid": {"method.n_ctx": [2]}, "set": {"model.backbone": "random:tiny"}})  # fmt: skip


def test_root_and_set_reach_every_cell_and_set_wins_over_the_file(tmp_path):
    executor = Recording()
    console = Console(file=io.StringIO(), width=200)
    result = run_sweep(
        _grid(datasets=("dtd", "world_shapes"), seeds=(1,)), executor=executor, db=str(tmp_path / "r.sqlite"),
        out=tmp_path, console=console, live=False, root=tmp_path / "data",
        overrides=["optim.epochs=1", "model.backbone=random:tiny", "method.ctx_init=null"],
    )  # fmt: skip
    assert len(executor.configs) == 4 and not result.failed
    for config in executor.configs:
        world = config["data"]["dataset"] == "world_shapes"
        assert config["data"].get("root") == (None if world else str(tmp_path / "data"))  # the world has a home
        assert config["optim"]["epochs"] == 1 and config["method"]["ctx_init"] is None


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("method.n_ctx=4", "--set method.n_ctx: the grid's matrix varies method.n_ctx ([2])"),
        ("seed=3", "--set seed: seed is a sweep axis, not an override"),
        ("optim.lr", "override 'optim.lr' is not of the form key.path=value"),
    ],
)
def test_set_that_cannot_apply_to_every_cell_is_refused(override, message):
    with pytest.raises(ConfigError) as info:
        with_command_line(_grid(), overrides=[override])
    assert message in info.value.message


def test_three_identical_failures_stop_the_sweep_and_it_says_so(tmp_path):
    executor = Recording()
    console = Console(file=io.StringIO(), width=200)
    db = str(tmp_path / "r.sqlite")
    result = run_sweep(_grid(), executor=executor, db=db, out=tmp_path, console=console, live=False)
    text = console.file.getvalue()
    assert len(executor.submitted) == 3 and len(result.failed) == 3 and len(result.pending) == 3
    assert result.stopped == "3 runs failed with the same error, so 3 cell(s) were not started: no data root given"
    assert "stopping: 3 runs failed with the same error" in text and "stopped early" in text
    # Fixed (a root given), the same sweep runs the failed and the unstarted cells.
    again = run_sweep(_grid(), executor=Recording(), db=db, out=tmp_path, console=console, live=False,
                      root=tmp_path)  # fmt: skip
    assert len(again.finished) == 6 and again.stopped is None


def test_different_failures_do_not_stop_a_sweep(tmp_path):
    class Varied(Recording):
        def outcome(self, job) -> dict:
            return {"status": "failed", "error": f"failure of {job.cell.label}"}

    result = run_sweep(_grid(), executor=Varied(), db=str(tmp_path / "r.sqlite"), out=tmp_path,
                       console=Console(file=io.StringIO()), live=False)  # fmt: skip
    assert len(result.failed) == 6 and result.stopped is None


def test_the_readme_sweep_command_with_root(tmp_path):
    """`restore sweep configs/sweeps/b2n_small.yaml --root DIR`: all 30 cells take the root (dry run: the
    ViT-B/16 weights and the datasets are not here)."""
    args = ["sweep", str(REPO / "configs/sweeps/b2n_small.yaml"), "--root", str(tmp_path), "--dry-run",
            "--out", str(tmp_path / "runs")]  # fmt: skip
    result = RUNNER.invoke(app, args, env=ENV)
    assert result.exit_code == 0, result.output
    assert "dry run: 30 to run, 0 finished before" in result.output
    from restore.scale.grid import expand, load_grid

    cells = expand(with_command_line(load_grid(REPO / "configs/sweeps/b2n_small.yaml"), root=tmp_path))
    assert len(cells) == 30 and {c.config.data.root for c in cells} == {tmp_path}


@pytest.mark.integration
def test_sweep_cli_stops_after_three_runs_fail_with_a_missing_root(tmp_path, monkeypatch):
    monkeypatch.delenv("RESTORE_DATA", raising=False)
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({"methods": ["coop"], "datasets": ["dtd"], "seeds": [1, 2, 3, 4, 5],
                                    "set": {"model.backbone": "random:tiny"}}))  # fmt: skip
    result = RUNNER.invoke(app, ["sweep", str(grid), "--workers", "1", "--out", str(tmp_path / "runs")], env=ENV)
    assert result.exit_code == 1
    assert "stopping: 3 runs failed with the same error, so 2 cell(s) were not started: no data root given" in (
        result.output
    )
    assert result.output.count("failed b2n/dtd/coop") == 3
