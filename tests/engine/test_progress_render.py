"""Progress bars at a fixed terminal width and on a scripted clock: counts never cut at 80 columns, and the
ETA is the average pace since the start (a pause moves it by the pause, not by a factor of 60)."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from restore.engine.progress import EvalProgress, RunLog, TrainProgress


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _rows(bar, width: int) -> list[str]:
    """The bar's rows as a terminal of ``width`` columns shows them."""
    out = Console(file=io.StringIO(), width=width, color_system=None)
    out.print(bar._progress.make_tasks_table(bar._progress.tasks))
    return out.file.getvalue().splitlines()


def _train(width: int, clock: Clock, total: int = 2000, done: int = 0) -> TrainProgress:
    log = RunLog(None, console=Console(file=io.StringIO(), width=width, color_system=None))
    bar = TrainProgress(log, enabled=True, clock=clock)
    bar.start(total, done)
    bar.start_epoch(1, 10, total // 10, 1e-3)
    return bar


@pytest.mark.parametrize("width", [60, 80, 100, 160])
def test_counts_and_eta_are_never_cut(width):
    clock = Clock()
    bar = _train(width, clock)
    try:
        for _ in range(200):
            clock.now += 0.5
            bar.step(1.23456, 56.25, 1e-3)
        rows = _rows(bar, width)
    finally:
        bar.stop()
    assert all(len(r) <= width for r in rows)
    assert " 200/2000 " in rows[0] and rows[0].rstrip().endswith("ETA 0:15:00")  # 0.5 s a step, 1800 left
    assert " 200/200 " in rows[1] and "loss 1.2346  acc 56.2%" in rows[1]
    assert ("lr 1.00e-03" in rows[0]) == (width >= 110)
    assert "…" not in "".join(rows)


def test_eta_is_the_average_pace_since_the_start_not_the_last_seconds():
    clock = Clock()
    bar = _train(80, clock, total=200)
    try:
        for _ in range(10):
            clock.now += 1.0
            bar.step(1.0, 50.0, 1e-3)
        assert "ETA 0:03:10" in _rows(bar, 80)[0]  # 10 s for 10 steps, 190 left
        clock.now += 60.0  # a pause (evaluation, a slow loader): 70 s for 10 steps so far
        assert "ETA 0:22:10" in _rows(bar, 80)[0]  # 70 / 10 * 190
        clock.now += 1.0
        bar.step(1.0, 50.0, 1e-3)
        assert "ETA 0:20:20" in _rows(bar, 80)[0]  # 71 / 11 * 189 = 1219.9
    finally:
        bar.stop()


def test_a_resumed_run_paces_only_the_steps_done_since_it_resumed():
    clock = Clock()
    bar = _train(80, clock, total=200, done=100)
    try:
        assert "ETA -:--:--" in _rows(bar, 80)[0]
        for _ in range(10):
            clock.now += 2.0
            bar.step(1.0, 50.0, 1e-3)
        assert " 110/200 " in _rows(bar, 80)[0] and "ETA 0:03:00" in _rows(bar, 80)[0]  # 2 s a step, 90 left
    finally:
        bar.stop()


def test_eval_bar_keeps_its_counts_at_80_columns():
    log = RunLog(None, console=Console(file=io.StringIO(), width=80, color_system=None))
    bar = EvalProgress(log, enabled=True)
    bar.start("world_pattern_shape_novel_split", 12345)
    try:
        for _ in range(12345):
            bar.advance()
        rows = _rows(bar, 80)
    finally:
        bar.stop()
    assert "12345/12345" in rows[0] and max(len(r) for r in rows) <= 80
