"""docs/own_data_and_methods.md as a user meets it: its shell commands run as written (in a folder holding
``my_images/`` and ``my_split.json``), its Python block is ``my_methods.py``, its TOML block the entry point."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.test_plugins import SRC, make_dist, write_images

DOC = Path(__file__).resolve().parents[1] / "docs" / "own_data_and_methods.md"


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC.read_text(), flags=re.S)


def shell(command: str, cwd: Path, pythonpath: list[Path]) -> subprocess.CompletedProcess:
    """One documented command through bash, with `restore` the package under test."""
    bin_dir = cwd / ".bin"
    bin_dir.mkdir(exist_ok=True)
    shim = bin_dir / "restore"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m restore "$@"\n')
    shim.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "RESTORE_IMPORT"}
    env.update(
        PATH=f"{bin_dir}{os.pathsep}{env['PATH']}", OMP_NUM_THREADS="1", COLUMNS="200",
        PYTHONPATH=os.pathsep.join(str(p) for p in [SRC, *pythonpath]),
    )  # fmt: skip
    return subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True)


def run_all(commands: str, cwd: Path, pythonpath: list[Path] = ()) -> list[str]:
    outputs = []
    for line in filter(None, (c.strip() for c in commands.splitlines())):
        quiet = " --quiet" * (line.startswith("restore run") or " eval " in line)  # no progress bars in a log
        result = shell(line + quiet, cwd, list(pythonpath))
        assert result.returncode == 0, f"{line}\n{result.stdout}\n{result.stderr}"
        outputs.append(result.stdout)
    return outputs


def user_folder(path: Path) -> Path:
    """What the page assumes the user has: my_images/<class>/* and a split file of their own."""
    path.mkdir()
    write_images(path / "my_images", {"red_fox": 8, "grey_wolf": 8, "barn_owl": 8, "cat": 8})
    def rows(images: range | tuple[int, ...]) -> list[list[object]]:
        return [[f"{c}/img0{i}.png", k, c.replace("_", " ")] for k, c in enumerate(["cat", "red_fox"]) for i in images]

    split = {"train": rows(range(4)), "val": [], "test": rows((5, 6))}
    (path / "my_split.json").write_text(json.dumps(split))
    return path


@pytest.mark.integration
def test_your_own_dataset_section_runs_as_written(tmp_path):
    cwd = user_folder(tmp_path / "user")
    dataset, seed, split_file, xd = blocks("bash")[:4]
    first_run, evaluated = run_all(dataset, cwd)
    (run,) = (cwd / "runs" / "b2n" / "my_images" / "coop").iterdir()
    metrics = json.loads((run / "metrics.json").read_text())["metrics"]
    assert f"{metrics['hm']:.2f}" in first_run and f"{metrics['base']['top1']:.2f}" in evaluated
    assert (run / "split.json").is_file()
    config = (run / "config.yaml").read_text()  # the folder recorded absolute: the config works from anywhere
    assert f"dataset: {cwd / 'my_images'}\n" in config
    run_all(seed, cwd)
    run_all(split_file, cwd)
    assert f"split_file: {cwd / 'my_split.json'}\n" in "".join(
        p.read_text() for p in (cwd / "runs" / "b2n" / "my_images" / "coop").glob("*/config.yaml")
    )
    assert len(list((cwd / "runs" / "b2n" / "my_images" / "coop").iterdir())) == 3
    (summary,) = run_all(xd, cwd)
    assert "world_pattern_shape" in summary and "(skipped dtd: DescribableTextures: folder" in summary


@pytest.mark.integration
def test_your_own_method_section_runs_as_written_with_import_and_with_an_entry_point(tmp_path):
    (code,) = blocks("python")
    method_bash = blocks("bash")[4]
    cwd = user_folder(tmp_path / "user")
    (cwd / "my_methods.py").write_text(code)
    run_all(method_bash, cwd)  # the eval line runs in a fresh process without --import
    (run,) = (cwd / "runs" / "b2n" / "my_images" / "toy").iterdir()
    assert "imports:\n- my_methods\n" in (run / "config.yaml").read_text()

    # The same method installed: the page's TOML block as the entry points of a distribution on the path.
    (toml,) = blocks("toml")
    groups = tomllib.loads(toml)["project"]["entry-points"]
    site = tmp_path / "site"
    site.mkdir()
    shutil.move(cwd / "my_methods.py", site / "my_methods.py")
    entry_points = "".join(
        f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()) for group, eps in groups.items()
    )
    make_dist(site, "my_methods_pkg", entry_points)
    fresh = user_folder(tmp_path / "fresh")
    run_all(method_bash.replace("--import my_methods ", ""), fresh, [site])
    assert (fresh / "runs" / "b2n" / "my_images" / "toy").is_dir()
