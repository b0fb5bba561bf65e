"""`restore quickstart`: the shipped grid is the issue's (5 methods x 2 regime tasks x 3 seeds, b2n), and a
small grid through the same code records its runs, writes the report with the shift plots, reruns nothing."""

from __future__ import annotations

import pytest
from rich.console import Console
from typer.testing import CliRunner

from restore.cli import app
from restore.engine.run_config import resolve
from restore.options import load_yaml
from restore.results import open_results
from restore.scale.grid import expand, parse_grid
from restore.world.quickstart import GRID_FILE, run_quickstart
from restore.world.tasks import REGIME, TASKS


def test_the_shipped_grid_is_base_to_novel_for_five_methods_on_regime_tasks_with_three_seeds():
    cells = expand(parse_grid(load_yaml(GRID_FILE), name="quickstart"))
    trained = {(c.method, c.dataset, c.seed) for c in cells if c.method != "zeroshot"}
    tasks = ("world_tinted_colours", "world_pattern_shape")
    assert {c.protocol for c in cells} == {"b2n"}
    assert trained == {(m, d, s) for m in ("coop", "cocoop", "maple", "restore_m") for d in tasks for s in (1, 2, 3)}
    assert {(c.dataset, c.seed) for c in cells if c.method == "zeroshot"} == {(d, 1) for d in tasks}
    # one task seen through a camera pretraining never saw, one from pretraining's own renderer
    assert {d.removeprefix("world_") for d in tasks} <= set(REGIME)
    assert [TASKS[d.removeprefix("world_")].shift.is_identity for d in tasks] == [False, True]
    # like for like: one schedule set, and every trained method runs the same 10 epochs (CoOp batch 4 there)
    assert {c.config.schedule for c in cells} == {"restore_paper"}
    resolved = {c.method: resolve(c.config, image_size=48) for c in cells}
    epochs = {m: r.optim.epochs for m, r in resolved.items()}
    assert epochs == {"zeroshot": 0, "coop": 10, "cocoop": 10, "maple": 10, "restore_m": 10}
    assert resolved["coop"].data.batch_size == 4


SMALL = {
    "protocols": ["b2n"],
    "methods": {"zeroshot": {}, "maple": {"optim.epochs": 1}},
    "datasets": ["world_shapes"],
    "shots": [2],
    "seeds": [1],
    "set": {"model.backbone": "world", "data.workers": 0, "data.crop_min_scale": 0.5},
}


@pytest.mark.integration
def test_quickstart_records_runs_writes_the_report_and_a_second_call_runs_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("RESTORE_CACHE", str(tmp_path / "cache"))
    console = Console(file=open(tmp_path / "out.txt", "w"), width=100)  # noqa: SIM115 (closed below)
    result, written = run_quickstart(tmp_path / "qs", workers=2, console=console, grid=SMALL)
    assert len(result.finished) == 2 and not result.failed
    with open_results(tmp_path / "qs" / "results.sqlite", create=False) as store:
        rows = store.query(status="finished")
    assert sorted(r.method for r in rows) == ["maple", "zeroshot"]
    assert all(r.metrics["base"]["n"] == 6 * 50 and r.metrics["novel"]["n"] == 6 * 50 for r in rows)
    html = next(p for p in written if p.suffix == ".html").read_text()
    assert "SYNTHETIC" in html and "Per-layer feature shift" in html and "data:image/png;base64," in html

    again, _ = run_quickstart(tmp_path / "qs", workers=2, console=console, grid=SMALL)
    assert again.attempts == 0 and len(again.skipped) == 2
    console.file.close()
    text = (tmp_path / "out.txt").read_text()
    assert "restore run b2n" in text and "ViT-B/16" in text  # how to go on to the real protocol


def test_quickstart_command_is_listed_with_help():
    result = CliRunner().invoke(app, ["quickstart", "--help"])
    assert result.exit_code == 0 and "SYNTHETIC" in result.output
