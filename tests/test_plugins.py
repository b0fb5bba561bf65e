"""Your own method and dataset from the command line (issue 17 §2): `--import MODULE`, $RESTORE_IMPORT and
installed entry points (a real dist-info on sys.path, read by importlib.metadata), the module recorded in the
run's config.yaml so `restore eval --checkpoint` works in a fresh process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from restore import plugins

SRC = Path(__file__).resolve().parents[1] / "src"
TINY = ["--backbone", "random:tiny", "--workers", "0", "--quiet", "--db", "none", "--device", "cpu"]

# A toy method as the README's "Your own method" section writes it: CoOp's parts with 4 context tokens.
TOY_METHOD = '''
from dataclasses import dataclass

from restore.options import option
from restore.methods.base import MethodConfig, PromptedCLIP, register
from restore.methods.parts import ContextText


@register
@dataclass
class ToyConfig(MethodConfig):
    name = "toy"
    summary = "toy: a few learnable context tokens before the class name"

    n_ctx: int = option(4, help="learnable context tokens", min=1, max=16)

    def build(self, clip, *, dataset=None, n_classes=0):
        return PromptedCLIP(clip, self, text=ContextText(clip, self.n_ctx, None), dataset=dataset)
'''


def write_images(folder: Path, classes: dict[str, int], size: int = 32) -> Path:
    """``classes``: folder name -> image count; each class a different mean colour (PNG files)."""
    rng = np.random.default_rng(0)
    for k, (name, n) in enumerate(classes.items()):
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            pixels = np.clip(rng.normal(40 * k + 30, 20, (size, size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / name / f"img{i:02d}.png")
    return folder


def restore_cli(*args, cwd: Path, pythonpath: list[Path], env: dict[str, str] | None = None):
    """`python -m restore ...` in a fresh process: nothing registered in this test process carries over."""
    environ = {k: v for k, v in os.environ.items() if k != plugins.ENV_VAR}
    environ.update(
        PYTHONPATH=os.pathsep.join(str(p) for p in [SRC, *pythonpath]), OMP_NUM_THREADS="1", COLUMNS="200",
        **(env or {}),
    )  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "restore", *map(str, args)], cwd=cwd, env=environ, capture_output=True, text=True
    )


def make_dist(site: Path, name: str, entry_points: str) -> None:
    """An installed distribution as importlib.metadata sees one: <name>-0.1.dist-info with METADATA and
    entry_points.txt in a folder on sys.path."""
    info = site / f"{name}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return write_images(tmp_path_factory.mktemp("own") / "leaves", {"oak_leaf": 6, "maple_leaf": 6, "birch": 6})


def _run_dir(out: Path) -> Path:
    (config,) = out.rglob("config.yaml")
    return config.parent


@pytest.mark.integration
def test_import_option_trains_an_out_of_tree_method_and_eval_finds_it_again_in_a_fresh_process(images, tmp_path):
    (tmp_path / "mymethods.py").write_text(TOY_METHOD)
    out = tmp_path / "runs"
    train = restore_cli(
        "--import", "mymethods", "train", "-m", "toy", "-d", images, "--epochs", "1", "--shots", "2", "--out", out,
        *TINY, cwd=tmp_path, pythonpath=[tmp_path],
    )  # fmt: skip
    assert train.returncode == 0, train.stderr
    run = _run_dir(out)
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["imports"] == ["mymethods"] and config["method"] == {"name": "toy", "n_ctx": 4}
    saved = json.loads((run / "metrics.json").read_text())["metrics"]["test"]

    scores = tmp_path / "scores.json"
    ev = restore_cli(
        "eval", "--checkpoint", run, "-d", images, "--device", "cpu", "--json", scores, cwd=tmp_path,
        pythonpath=[tmp_path],
    )  # fmt: skip
    assert ev.returncode == 0, ev.stderr
    assert json.loads(scores.read_text())["test"] == saved  # the recorded split, the same model: the same numbers

    config["imports"] = []  # without the record, the fresh process cannot know the method
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    lost = restore_cli("eval", "--checkpoint", run, "-d", images, cwd=tmp_path, pythonpath=[tmp_path])
    assert lost.returncode == 2 and "error: unknown method 'toy'" in lost.stderr


def test_entry_points_register_methods_datasets_and_commands_for_every_command(images, tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "toyplug.py").write_text(
        TOY_METHOD
        + textwrap.dedent('''
        import typer

        from restore.data import DatasetSpec, register_dataset

        def datasets():
            register_dataset(DatasetSpec(name="leaves", title="Leaves", folder="leaves", split_file="split.json"))

        app = typer.Typer()

        @app.command()
        def hello(name: str) -> None:
            print(f"hello {name}")
        ''')
    )
    make_dist(
        site,
        "toyplug",
        """\
        [restore.methods]
        toy = toyplug

        [restore.datasets]
        leaves = toyplug:datasets

        [restore.commands]
        greet = toyplug:app
        """,
    )
    methods = restore_cli("methods", "--json", cwd=tmp_path, pythonpath=[site])
    assert methods.returncode == 0, methods.stderr
    assert "toy" in [m["name"] for m in json.loads(methods.stdout)]
    listed = restore_cli("data", "list", cwd=tmp_path, pythonpath=[site])
    assert listed.returncode == 0 and "leaves" in listed.stdout, listed.stderr
    hello = restore_cli("greet", "hello", "you", cwd=tmp_path, pythonpath=[site])
    assert hello.returncode == 0 and hello.stdout.strip() == "hello you", hello.stderr
    without = restore_cli("methods", "--json", cwd=tmp_path, pythonpath=[])
    assert "toy" not in [m["name"] for m in json.loads(without.stdout)]


@pytest.mark.integration
def test_an_entry_point_method_trains_and_a_fresh_process_evaluates_it(images, tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "toyplug.py").write_text(TOY_METHOD)
    make_dist(site, "toyplug", "[restore.methods]\ntoy = toyplug\n")
    out = tmp_path / "runs"
    train = restore_cli(
        "run", "b2n", "-m", "toy", "-d", images, "--epochs", "1", "--shots", "2", "--out", out, *TINY,
        cwd=tmp_path, pythonpath=[site],
    )  # fmt: skip
    assert train.returncode == 0, train.stderr
    run = _run_dir(out)
    assert yaml.safe_load((run / "config.yaml").read_text())["imports"] == []  # found again without a record
    ev = restore_cli("eval", "-k", run, "-d", images, "-p", "b2n", "--device", "cpu", cwd=tmp_path, pythonpath=[site])
    assert ev.returncode == 0, ev.stderr
    saved = json.loads((run / "metrics.json").read_text())["metrics"]
    assert f"{saved['base']['top1']:.2f}" in ev.stdout and f"{saved['novel']['top1']:.2f}" in ev.stdout


def test_restore_import_env_var_and_a_bad_module_are_clear(tmp_path):
    (tmp_path / "mymethods.py").write_text(TOY_METHOD)
    listed = restore_cli(
        "methods", "--json", cwd=tmp_path, pythonpath=[tmp_path], env={"RESTORE_IMPORT": "mymethods, json"}
    )
    assert listed.returncode == 0, listed.stderr
    assert "toy" in [m["name"] for m in json.loads(listed.stdout)]

    bad = restore_cli("--import", "no_such_module_here", "methods", cwd=tmp_path, pythonpath=[])
    assert bad.returncode == 2
    assert bad.stderr.splitlines()[0] == (
        "error: cannot import 'no_such_module_here' (named by --import, $RESTORE_IMPORT or a run's imports:): "
        "ModuleNotFoundError: No module named 'no_such_module_here'"
    )
    assert "hint: the module must be importable here" in bad.stderr and "Traceback" not in bad.stderr


def test_a_broken_installed_extension_is_a_warning_and_the_command_still_works(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "brokenplug.py").write_text("raise RuntimeError('half-installed')\n")
    make_dist(site, "brokenplug", "[restore.methods]\nbroken = brokenplug\n")
    result = restore_cli("methods", "coop", cwd=tmp_path, pythonpath=[site])
    assert result.returncode == 0, result.stderr
    assert "coop" in result.stdout
    assert "warning: extension 'broken' (restore.methods) could not be loaded: half-installed" in result.stderr


def test_the_synthetic_world_plugs_in_through_the_same_extension_point():
    from restore.engine.backbone import _provider
    from restore.world.weights import load_world_clip

    assert "world" in plugins.entry_points(plugins.DATASETS) and "world" in plugins.backbone_names()
    assert _provider("world") is load_world_clip
    assert "world" in plugins.commands()
    from restore.data import get_dataset

    assert get_dataset("world_shapes").name == "world_shapes"  # registered through plugins.load_group


def test_sweep_cells_carry_the_imported_modules_to_their_worker_processes(images, tmp_path, monkeypatch):
    from restore.scale.grid import expand, parse_grid

    (tmp_path / "mysweepmethods.py").write_text(TOY_METHOD.replace('name = "toy"', 'name = "sweeptoy"'))
    monkeypatch.syspath_prepend(str(tmp_path))
    from restore.methods import base

    monkeypatch.setattr(plugins, "_imported", [])  # this test's imports only
    monkeypatch.setattr(base, "_REGISTRY", dict(base._REGISTRY))  # and its method gone after it
    plugins.import_modules(["mysweepmethods"])
    cells = expand(parse_grid({"methods": ["sweeptoy", "coop"], "datasets": [str(images)], "seeds": [1, 2]}))
    assert len(cells) == 4 and {c.data["imports"] == ["mysweepmethods"] for c in cells} == {True}
    assert {c.config.data.dataset for c in cells} == {str(images)}
