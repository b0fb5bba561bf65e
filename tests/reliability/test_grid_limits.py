"""Bounded work for absurd grids: a sweep counts its cells from the axis lengths before building any, refuses
more than the limit (with the count and how to raise it), and builds cells one at a time."""

from __future__ import annotations

import itertools
import subprocess
import sys

import pytest
import yaml

import restore.scale.grid as grid_module
from restore.errors import ConfigError
from restore.scale.grid import count_cells, expand, iter_cells, parse_grid
from tests.scale.conftest import child_env


def _huge() -> dict:
    """A grid of 10,000,000 cells from a few short lists (a typo'd range or one matrix key too many)."""
    return {"methods": ["coop"], "datasets": ["dtd"], "seeds": list(range(100)),
            "grid": {"optim.lr": [i / 1000 for i in range(1, 101)], "optim.epochs": list(range(1, 11)),
                     "method.n_ctx": list(range(1, 101))},
            "set": {"model.backbone": "random:tiny"}}  # fmt: skip


HUGE = ("the grid has 10,000,000 cells (100 seeds x 100 values of optim.lr x 10 values of optim.epochs "
        "x 100 values of method.n_ctx), more than the limit of 10,000")  # fmt: skip
HINT = "split it into smaller sweeps, or raise the limit: RESTORE_MAX_CELLS=10000000 restore sweep ..."


def _seeds(n: int) -> dict:
    return {"methods": ["coop"], "datasets": ["dtd"], "seeds": list(range(n)), "set": {"model.backbone": "random:tiny"}}


def test_a_grid_is_counted_from_its_axes_before_anything_is_built(monkeypatch):
    g = parse_grid({"protocols": ["b2n", "fewshot"], "methods": ["coop", "maple", "vpt"], "datasets": ["dtd"],
                    "seeds": [1, 2], "grid": {"optim.lr": [0.1, 0.2, 0.3, 0.4]},
                    "include": [{"protocol": "b2n", "method": "coop", "seed": 1, "set": {"optim.epochs": 1}}],
                    "set": {"model.backbone": "random:tiny"}})  # fmt: skip
    assert count_cells(g) == 2 * 3 * 1 * 1 * 2 * 4 + 1 == len(expand(g))  # no excludes: the bound is exact

    built = []
    real = grid_module._cell
    monkeypatch.setattr(grid_module, "_cell", lambda *a: built.append(a) or real(*a))
    with pytest.raises(ConfigError) as info:
        expand(parse_grid(_huge()))
    assert info.value.message == HUGE
    assert info.value.hint == HINT
    assert built == []  # refused before a single cell was built


def test_the_limit_is_inclusive_and_raised_by_the_environment_or_the_caller(monkeypatch):
    g = parse_grid(_seeds(6))
    assert len(expand(g, limit=6)) == 6
    with pytest.raises(ConfigError, match=r"the grid has 6 cells \(6 seeds\), more than the limit of 5"):
        expand(g, limit=5)
    monkeypatch.setenv("RESTORE_MAX_CELLS", "5")
    with pytest.raises(ConfigError, match="more than the limit of 5\n"):
        expand(g)
    monkeypatch.setenv("RESTORE_MAX_CELLS", "6")
    assert len(expand(g)) == 6
    for bad in ("many", "0", "-3", "9" * 40):
        monkeypatch.setenv("RESTORE_MAX_CELLS", bad)
        with pytest.raises(ConfigError, match=r"\$RESTORE_MAX_CELLS must be a whole number of cells"):
            expand(g)


def test_cells_are_built_one_at_a_time(monkeypatch):
    """A grid far over any limit still yields its first cells at once: nothing is built ahead of need."""
    built = []
    real = grid_module._cell
    monkeypatch.setattr(grid_module, "_cell", lambda *a: built.append(a) or real(*a))
    cells = iter_cells(parse_grid(_huge()))
    first = list(itertools.islice(cells, 3))
    assert [(c.seed, c.point) for c in first] == [
        (0, (("optim.lr", 0.001), ("optim.epochs", 1), ("method.n_ctx", n))) for n in (1, 2, 3)
    ]
    assert len(built) == 3


def test_sweep_dry_run_of_ten_million_cells_is_refused_at_once(tmp_path):
    path = tmp_path / "huge.yaml"
    path.write_text(yaml.safe_dump(_huge(), sort_keys=False))
    # Before the limit this ran for minutes, printing nothing; the timeout only keeps a regression bounded.
    done = subprocess.run([sys.executable, "-m", "restore", "sweep", str(path), "--dry-run", "--db",
                           str(tmp_path / "r.sqlite")], capture_output=True, text=True, timeout=120,
                          env=child_env(COLUMNS="250"))  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
    assert lines == [
        f"error: {HUGE}",
        "hint: split it into smaller sweeps, or raise the limit: RESTORE_MAX_CELLS=10000000 restore sweep ...",
    ]
    assert not (tmp_path / "r.sqlite").exists()
