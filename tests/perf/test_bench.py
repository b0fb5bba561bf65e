"""The issue 8 benchmark's machinery, on the tiny architecture: every figure produced, the plot written.

No timing is asserted; the figures are only checked to exist and be positive.
"""

from __future__ import annotations

import json
import math

import pytest
from benchmarks import bench_perf


def test_run_times_follow_the_step_count_of_a_run():
    steps = {"ours": {"50": 2.0, "100": 3.0}, "reference": {"50": 5.0}}
    out = bench_perf.run_times(steps, 50)
    assert set(out) == {"ours", "reference"}
    # 10 epochs of ceil(50 classes * shots / batch 4) steps
    assert out["ours"][1] == 10 * math.ceil(50 / 4) * 2.0
    assert out["reference"][16] == 10 * 200 * 5.0
    assert bench_perf.run_times(steps, 100) == {
        "ours": {s: 10 * math.ceil(100 * s / 4) * 3.0 for s in bench_perf.SHOTS}
    }


def test_estimate_extrapolates_linearly_and_never_below_a_measured_time():
    assert bench_perf._estimate({}, 10) == float("inf")
    assert bench_perf._estimate({50: 2.0}, 100) == 4.0
    assert bench_perf._estimate({50: 2.0, 100: 3.0}, 200) == pytest.approx(5.0)
    assert bench_perf._estimate({50: 2.0, 100: 3.0}, 10) == 2.0


@pytest.mark.integration
def test_smoke_run_on_the_tiny_model(tmp_path, monkeypatch):
    monkeypatch.setattr(bench_perf, "ARCH", "tiny")
    monkeypatch.setenv("RESTORE_PERF_ARCH", "tiny")  # the 1,000-class subprocesses
    monkeypatch.setenv("RESTORE_PERF_BUDGET", "600")  # quick: one round per part; no part skipped
    monkeypatch.setenv("RESTORE_BENCH_OUT", str(tmp_path))
    monkeypatch.setattr(bench_perf, "MEMORY_OPTIONS", dict(list(bench_perf.MEMORY_OPTIONS.items())[:2]))
    record = bench_perf.run(quick=True)
    json.dumps(record, default=float)  # what the runner writes
    for n in (50, 100):
        assert record["maple_vs_reference"]["speedup"][n]["wall"] > 0
    assert set(record["restore"]["ratio_to_maple"]) == set(bench_perf.RESTORE_VARIANTS)
    assert record["restore"]["speedup_vs_reference"]["wall"] > 0
    memory = record["memory_1000_classes"]
    assert memory["plain"]["peak_rss_bytes"] >= memory["plain"]["rss_before_steps_bytes"] > 0
    assert memory["chunks of 100, checkpointed"]["time_vs_plain"] > 0
    assert record["evaluation"]["images_per_s"]["restore_m"] > 0
    steps = record["scaling"]["step_seconds"]
    assert {"10", "50", "100", "200", "1000"} <= set(steps["ours"])
    png = tmp_path / record["plot"].split("/")[-1]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
