"""`restore analyze` on short real runs: the JSON and the three figures, numbers equal to the runs' records."""

from __future__ import annotations

import json

import pytest

from restore.cli import main
from restore.engine.run_config import load_run_config
from restore.engine.runs import run
from tests.analysis.test_analysis import _is_png_with_content
from tests.engine.fakes import TINY, make_tree


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    data = make_tree(tmp_path_factory.mktemp("data"))
    out = tmp_path_factory.mktemp("runs")
    dirs = []
    for method in ("restore_m", "maple", "zeroshot"):
        values = {**TINY, "method": method, "protocol": "b2n", "data.dataset": "dtd", "data.root": data,
                  "out": out, "optim.epochs": 1, "data.batch_size": 4, "data.shots": 2}  # fmt: skip
        dirs.append(run(load_run_config(None, values, [])).run_dir)
    return dirs


def test_analyze_writes_json_and_figures_matching_the_runs(runs, tmp_path, capsys):
    out = tmp_path / "analysis"
    code = main(["analyze", *map(str, runs), "--out", str(out), "--tsne-images", "8"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "analysis.json" in printed and "tsne" in printed
    assert "gain over zero-shot (points): base " in printed and "{" not in printed  # formatted, not a dict
    result = json.loads((out / "analysis.json").read_text())
    for name in ("layer_shifts", "discrepancy_vs_gain", "tsne"):
        assert _is_png_with_content(out / f"{name}.png"), name
    by_method = {r["method"]: r for r in result["runs"]}
    for method, run_dir in zip(("restore_m", "maple", "zeroshot"), runs, strict=True):
        recorded = json.loads((run_dir / "metrics.json").read_text())["metrics"]
        ours = by_method[method]
        if method == "zeroshot":  # no prompts, no shift, no gain over itself
            assert ours["shift"]["total_vision"] == 0.0 and ours["shift"]["total_text"] == 0.0
            assert all(abs(g) < 1e-9 for g in ours["gain_over_zero_shot"].values())
            continue
        # the training loop's record and the analysis of the same checkpoint agree
        assert ours["shift"]["vision"] == pytest.approx(recorded["shift"]["vision"], rel=1e-6)
        assert ours["shift"]["text"] == pytest.approx(recorded["shift"]["text"], rel=1e-6)
        assert ours["shift"]["total_discrepancy"] == pytest.approx(recorded["shift"]["discrepancy"], rel=1e-6)
        zs = by_method["zeroshot"]["accuracy"]
        assert ours["gain_over_zero_shot"]["base"] == pytest.approx(recorded["base"]["top1"] - zs["base"])
        assert ours["gain_over_zero_shot"]["novel"] == pytest.approx(recorded["novel"]["top1"] - zs["novel"])
    assert {p["label"] for p in result["gain_points"]} == {"restore_m", "maple", "zeroshot"}


def test_analyze_on_a_test_split_and_errors(runs, tmp_path, capsys):
    out = tmp_path / "a"
    assert main(["analyze", str(runs[0]), "--out", str(out), "--split", "novel", "--no-tsne", "--no-zero-shot"]) == 0
    result = json.loads((out / "analysis.json").read_text())
    assert result["runs"][0]["split"] == "novel" and result["runs"][0]["shift"]["images"] > 0
    assert main(["analyze", str(runs[0]), "--out", str(out), "--split", "bogus"]) != 0
    assert "bogus" in capsys.readouterr().err
    assert main(["analyze", str(tmp_path / "nothing"), "--out", str(out)]) != 0
