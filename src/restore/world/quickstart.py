"""`restore quickstart`: the README's main job. Base-to-novel on two SYNTHETIC world regime tasks for zero-shot
CLIP, CoOp, CoCoOp, MaPLe and RESTORE_m over 3 seeds, as a sweep (so a second call only reports, and an interrupted
one continues), then the report with its feature-shift plots and the way to the real protocol."""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console

from restore.options import load_yaml
from restore.scale.grid import parse_grid
from restore.scale.local import LocalExecutor, available_cores
from restore.scale.sweep import SweepResult, run_sweep, sweep_records
from restore.world.datasets import PREFIX
from restore.world.tasks import TASKS, ensure_task

GRID_FILE = Path(__file__).resolve().parent / "quickstart.yaml"
TITLE = "restore quickstart: base-to-novel on the SYNTHETIC world (world CLIP, not OpenAI CLIP on real images)"

NEXT_STEPS = """\
[bold]The paper's claims in the world[/] (C1-C5, 3 seeds, verdicts with their rule: docs/claims.md):
  [cyan]restore sweep configs/sweeps/world_claims.yaml --workers 2[/], then
  [cyan]restore report --db runs/world/results.sqlite --claims configs/sweeps/world_claims.yaml[/]
[bold]This was the synthetic world.[/] The real protocol is the same commands with real weights and data:
  1. CLIP weights: [cyan]--backbone ViT-B/16[/] downloads OpenAI's checkpoint into $RESTORE_CACHE/clip on first
     use; offline, put [cyan]ViT-B-16.pt[/] there (or pass any OpenAI, open_clip or Hugging Face checkpoint path).
  2. Datasets in CoOp's layout (DATASETS.md): [cyan]restore data download dtd --root ~/data[/], or
     [cyan]restore data verify dtd --root ~/data[/] on a copy you already have.
  3. One run:  [cyan]restore run b2n -m restore_m -d dtd --root ~/data --backbone ViT-B/16 --seed 1 --seed 2 --seed 3[/]
     A grid:   [cyan]restore sweep configs/sweeps/b2n_small.yaml[/]  (add [cyan]--ray-address auto[/] for a cluster)
     Results:  [cyan]restore report --out report/[/]  (tables against the published numbers, plots, HTML)"""


def run_quickstart(
    out: str | Path = "runs/quickstart",
    *,
    workers: int | None = None,
    console: Console | None = None,
    grid: dict | None = None,
) -> tuple[SweepResult, list[Path]]:
    """Run (or finish) the quickstart sweep into ``out`` and write its report to ``out/report``.

    ``grid`` replaces the shipped grid file's content (tests run a smaller one)."""
    console = console or Console(stderr=True)
    out = Path(out).expanduser()
    start = time.perf_counter()
    console.print(f"[bold]{TITLE}[/]", highlight=False)
    data = load_yaml(GRID_FILE) if grid is None else grid
    parsed = parse_grid(data, name="quickstart", source=GRID_FILE if grid is None else None)
    for name in _world_tasks(data):  # generated here once, not by several runs at the same time
        task = TASKS[name]
        with console.status(f"world task {name}: generating on first use"):
            root = ensure_task(name)
        camera = "" if task.shift.is_identity else f", camera: {task.shift.describe()}"
        console.print(f"  task {name}: {len(task.classes)} classes{camera} in {root}", highlight=False)
    # Tiny models run best on one thread each: as many runs at once as there are cores.
    executor = LocalExecutor(workers or max(1, available_cores()), log_dir=out / "sweeps" / "quickstart" / "logs")
    try:
        result = run_sweep(parsed, executor=executor, out=out, console=console, report=True)
    finally:
        executor.close()
    written = write_quickstart_report(result, out / "report")
    console.print(f"report: {', '.join(str(p) for p in written)}", highlight=False)
    console.print(f"quickstart: {time.perf_counter() - start:.0f} s in all\n", highlight=False)
    console.print(NEXT_STEPS, highlight=False)
    return result, written


def _world_tasks(grid: dict) -> list[str]:
    """The world tasks a grid's datasets name (``world_<task>``), in its order."""
    names = [str(d).removeprefix(PREFIX) for d in grid.get("datasets", [])]
    return [n for n in names if n in TASKS]


def write_quickstart_report(result: SweepResult, folder: Path) -> list[Path]:
    """Markdown and a self-contained HTML page (tables, Base/Novel/HM bars, per-layer feature shift)."""
    from restore.results.report import build_report, write_report  # slow: matplotlib, for the report only

    records = sweep_records(result)
    if not records:
        return []
    return write_report(build_report(records, source=result.db, title=TITLE), folder, ("markdown", "html"))
