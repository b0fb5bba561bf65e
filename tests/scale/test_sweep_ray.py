"""`restore sweep` on a real local Ray instance (started here: loopback, 2 CPUs, no dashboard): four runs of
the tiny model as Ray tasks, the rows written by the driver, a second sweep that starts nothing, and a
failing cell recorded as failed while the others finish."""

from __future__ import annotations

import pytest
import yaml

from restore.scale.grid import parse_grid
from restore.scale.sweep import run_sweep
from tests.scale.conftest import check_sweep_database, child_env, sweep_grid

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'restore[ray]')")


@pytest.fixture(scope="module")
def local_ray():
    """A throwaway single-machine Ray whose workers import this checkout with one thread."""
    mp = pytest.MonkeyPatch()
    for key, value in child_env().items():  # the raylet and its workers inherit the environment
        mp.setenv(key, value)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    yield ray
    ray.shutdown()
    mp.undo()


@pytest.mark.integration
def test_ray_sweep_records_runs_skips_finished_ones_and_survives_a_failing_cell(local_ray, data_root, tmp_path):
    out, db = tmp_path / "runs", tmp_path / "results.sqlite"
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(sweep_grid(data_root)))
    first = run_sweep(path, ray_address="auto", workers=2, out=out, db=str(db), retries=0)
    assert sorted(r.cell.label for r in first.finished) == [
        "b2n/dtd/coop/shots2/seed1", "b2n/dtd/coop/shots2/seed2",
        "b2n/dtd/maple/shots2/seed1", "b2n/dtd/maple/shots2/seed2",
    ]  # fmt: skip
    assert [r.cell.label for r in first.failed] == ["b2n/eurosat/coop/shots2/seed1"]
    assert "eurosat does not exist" in first.failed[0].error
    assert first.attempts == 5
    check_sweep_database(db, out, failed_attempts=1)
    assert local_ray.is_initialized()  # the sweep used the instance it found and left it running

    again = run_sweep(parse_grid(sweep_grid(data_root, failing=False)), ray_address="auto", out=out, db=str(db))
    assert again.attempts == 0 and len(again.skipped) == 4
    check_sweep_database(db, out, failed_attempts=1)
