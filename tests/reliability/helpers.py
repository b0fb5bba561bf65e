"""What the reliability tests share: tiny CLI settings, a command-line runner, generated data to damage, and
checks that a folder or database holds nothing half-written."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from tests.engine.fakes import make_tree

__all__ = ["TINY", "cli", "db_rows", "edit_split", "errors", "make_tree", "split_file", "truncate"]

# Fixed in restore.engine.runs, which waits for the scale branch to merge (strict: the fix must remove this).
RUNNER = CliRunner()
ENV = {"COLUMNS": "250", "OMP_NUM_THREADS": "1"}
# The tiny random backbone, no loader workers, short evaluation batches, a small feature-shift profile.
TINY = ["--backbone", "random:tiny", "--workers", "0", "--quiet", "--set", "data.eval_batch_size=16",
        "--set", "shift_images=4"]  # fmt: skip


def cli(*args: Any):
    """`restore ARGS` in this process (typer's runner): exit code and output (stdout and stderr)."""
    from restore.cli import app

    return RUNNER.invoke(app, [str(a) for a in args], env=ENV)


def errors(output: str) -> list[str]:
    """The `error: ...` lines a command printed."""
    return [line for line in output.splitlines() if line.startswith("error:")]


def db_rows(db: Path) -> list:
    from restore.results import open_results

    with open_results(db, create=False) as store:
        return store.query()


def split_file(root: Path) -> Path:
    return root / "dtd" / "split_zhou_DescribableTextures.json"


def edit_split(root: Path, change) -> dict:
    """Rewrite the generated DTD's split file with ``change(data)`` (which edits the dict in place)."""
    path = split_file(root)
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))
    return data


def truncate(path: Path) -> Path:
    """Cut a JPEG in half, as an interrupted download leaves it (its header still parses)."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path
