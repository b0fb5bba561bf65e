"""Cross-dataset / domain generalisation with chosen targets (issue 17 §2): ``--target`` (repeatable, world tasks
and image folders too), a target whose data is missing skipped and listed with why, and one clear error only
when no target at all can be tested."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from restore.cli import app
from restore.data import get_protocol
from tests.test_plugins import write_images

RUNNER = CliRunner()
ENV = {"COLUMNS": "250", "OMP_NUM_THREADS": "1"}
TINY = ["--backbone", "random:tiny", "--workers", "0", "--quiet", "--db", "none", "--set", "data.eval_batch_size=32"]


def invoke(*args):
    return RUNNER.invoke(app, [str(a) for a in args], env=ENV)


@pytest.mark.integration
def test_world_source_to_a_world_target_with_a_missing_target_skipped_and_listed(tmp_path):
    out = tmp_path / "runs"
    result = invoke(
        "run", "xd", "-m", "coop", "-d", "world_color_shape", "--target", "world_pattern_shape", "--target", "dtd",
        "-r", tmp_path / "data", "--epochs", "1", "--shots", "1", "--out", out, *TINY,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    missing = f"DescribableTextures: folder {tmp_path / 'data' / 'dtd'} does not exist"
    assert f"(skipped dtd: {missing})" in result.output
    (metrics_file,) = out.rglob("metrics.json")
    metrics = json.loads(metrics_file.read_text())["metrics"]
    assert {k for k, v in metrics.items() if isinstance(v, dict) and "top1" in v} == {
        "world_color_shape", "world_pattern_shape"
    }  # fmt: skip
    assert metrics["extra"]["skipped_targets"] == {"dtd": missing}
    config = (metrics_file.parent / "config.yaml").read_text()
    assert "targets:\n  - world_pattern_shape\n  - dtd\n" in config


def test_folder_targets_and_no_target_at_all_is_one_error(tmp_path):
    source = write_images(tmp_path / "source", {"a": 5, "b": 5})
    target = write_images(tmp_path / "target", {"c": 5, "d": 5, "e": 5})
    gone = tmp_path / "gone"
    data = get_protocol("dg", targets=[str(target), str(gone)]).build(str(source), tmp_path, shots=1)
    assert list(data.evaluate) == [str(source), str(target)]
    assert data.evaluate[str(target)].classnames == ["c", "d", "e"]
    assert data.skipped == {str(gone): f"image folder {gone} does not exist"}

    out = tmp_path / "runs"
    result = invoke(
        "run", "xd", "-m", "coop", "-d", source, "--target", "dtd", "--target", gone, "-r", tmp_path, "--out", out,
        *TINY,
    )  # fmt: skip
    assert result.exit_code == 2
    lines = result.output.splitlines()
    assert lines[0] == "error: xd: none of the 2 targets can be evaluated:"
    assert f"  {gone}: image folder {gone} does not exist" in lines
    assert f"  dtd: DescribableTextures: folder {tmp_path / 'dtd'} does not exist" in lines
    assert "--target NAME (repeatable)" in result.output and not out.exists()


def test_target_outside_xd_and_dg_and_an_unknown_target_are_errors(tmp_path):
    source = write_images(tmp_path / "source", {"a": 5, "b": 5})
    on_b2n = invoke("run", "b2n", "-m", "coop", "-d", source, "--target", "dtd", "--out", tmp_path / "r", *TINY)
    assert on_b2n.exit_code == 2 and "error: --target applies to xd and dg, not b2n" in on_b2n.output
    typo = invoke("run", "xd", "-m", "coop", "-d", source, "--target", "dtdd", "--out", tmp_path / "r", *TINY)
    assert typo.exit_code == 2 and "error: unknown dataset 'dtdd'" in typo.output  # a typo is not "missing data"
