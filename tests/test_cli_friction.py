"""Issue 17 §6 at the command line: zero-shot's --classes, world tasks without --root in zeroshot/eval, and
`restore methods` wrapped between words on an 80-column terminal."""

from __future__ import annotations

import json
import re
import shutil

import pytest
from typer.testing import CliRunner

from restore.cli import app
from tests.engine.fakes import make_tree

RUNNER = CliRunner()


def invoke(*args, columns: int = 250):
    return RUNNER.invoke(app, [str(a) for a in args], env={"COLUMNS": str(columns), "OMP_NUM_THREADS": "1"})


@pytest.fixture(autouse=True)
def _one_thread():
    from restore.engine.device import torch_threads

    with torch_threads(1):
        yield


def test_zeroshot_classes_present_uses_only_the_classes_on_disk(tmp_path):
    root = make_tree(tmp_path / "data")
    images = root / "dtd" / "images"
    gone = sorted(p for p in images.iterdir() if p.is_dir())[0]
    shutil.rmtree(gone)
    refused = invoke("zeroshot", "-b", "random:tiny", "-d", "dtd", "-r", root, "--quiet")
    assert refused.exit_code == 2 and "--classes present" in refused.output  # the hint names the option
    out = tmp_path / "zs.json"
    result = invoke("zeroshot", "-b", "random:tiny", "-d", "dtd", "-r", root, "--classes", "present", "--quiet",
                    "--json", out)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["test"]["n"] == 5 * 4  # 5 of the 6 classes, 4 test images each


@pytest.mark.integration
def test_world_tasks_need_no_root_in_zeroshot_and_eval(tmp_path, monkeypatch):
    monkeypatch.delenv("RESTORE_DATA", raising=False)
    zs = tmp_path / "zs.json"
    result = invoke("zeroshot", "-b", "world", "-d", "world_shapes", "-p", "b2n", "--quiet", "--json", zs)
    assert result.exit_code == 0, result.output
    assert json.loads(zs.read_text())["base"]["n"] == 6 * 50
    run = invoke("run", "b2n", "-m", "coop", "-d", "world_shapes", "-b", "world", "--epochs", "1", "--quiet",
                 "--workers", "0", "-o", tmp_path / "runs", "--db", "none")  # fmt: skip
    assert run.exit_code == 0, run.output
    run_dir = next((tmp_path / "runs").glob("b2n/world_shapes/coop/*"))
    ev = tmp_path / "ev.json"
    result = invoke("eval", "-k", run_dir, "-d", "world_shapes", "-p", "b2n", "--quiet", "--json", ev)
    assert result.exit_code == 0, result.output
    recorded = json.loads((run_dir / "metrics.json").read_text())["metrics"]
    assert json.loads(ev.read_text())["novel"] == recorded["novel"]
    no_root = invoke("zeroshot", "-b", "random:tiny", "-d", "dtd")
    assert no_root.exit_code == 2 and "error: no data root given" in no_root.output


@pytest.mark.parametrize("name", [None, "restore_m", "cocoop"])
def test_methods_wraps_between_words_at_80_columns(name):
    from restore.methods import method_table

    result = invoke("methods", *([name] if name else []), columns=80)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert max(len(line) for line in lines) <= 80
    words = {w for line in lines for w in line.split()}
    for row in method_table():
        if name not in (None, row["name"]):
            continue
        for f_name, _, default, _ in row["fields"]:
            shown = f"{f_name}={default!r}" if name is None else f"method.{f_name}"
            for word in shown.split():  # every word of every option whole on one line
                assert word.strip(",") in {w.strip(",") for w in words}, (word, name)
    assert not re.search(r"Fal$|^\s*se\b", result.output, flags=re.M)


def test_fewshot_zeroshot_over_five_shot_counts_is_evaluated_once(tmp_path):
    root = make_tree(tmp_path / "data")
    out, db = tmp_path / "runs", tmp_path / "r.sqlite"
    shots = [1, 2, 4, 8, 16]
    result = invoke("run", "fewshot", "-m", "zeroshot", "-d", "dtd", "-r", root, *[a for n in shots for a in
                    ("--shots", n)], "--backbone", "random:tiny", "--workers", "0", "--quiet", "-o", out,
                    "--db", db)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.output.count("the same model as the shots-1 run, evaluated once") == 4
    dirs = {n: next(out.glob(f"fewshot/dtd/zeroshot/shots{n}_seed1-*")) for n in shots}
    metrics = {n: json.loads((d / "metrics.json").read_text())["metrics"] for n, d in dirs.items()}
    assert all(m == metrics[1] for m in metrics.values()) and metrics[1]["all"]["n"] == 6 * 4
    assert "eval all:" in (dirs[1] / "log.txt").read_text()
    for n in shots[1:]:
        log = (dirs[n] / "log.txt").read_text()
        assert "eval all:" not in log and "its metrics are recorded, not computed again" in log
    from restore.results import open_results

    with open_results(db) as store:
        rows = store.query(status="finished")
    assert sorted(r.shots for r in rows) == shots
