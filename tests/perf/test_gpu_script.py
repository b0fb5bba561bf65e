"""The GPU benchmark script's logic, run on the CPU with the tiny architecture (no GPU on the test machine).

Checks that every part runs (also under bf16 autocast, the GPU default) and writes its JSON, and that the
one-process DDP smoke check (gloo on the CPU) finds DDP training identical to plain training.
"""

from __future__ import annotations

import json

import pytest
from benchmarks.gpu import bench_gpu, ddp_smoke


@pytest.mark.integration
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_gpu_benchmark_runs_on_cpu_and_writes_its_record(tmp_path, monkeypatch, precision):
    monkeypatch.setenv("RESTORE_BENCH_OUT", str(tmp_path))
    assert bench_gpu.main(["--device", "cpu", "--arch", "tiny", "--precision", precision, "--quick"]) == 0
    (path,) = tmp_path.glob("gpu-*.json")
    record = json.loads(path.read_text())
    assert record["precision"] == precision and record["arch"] == "tiny"
    assert set(record["restore"]["ratio_to_maple"]) == set(bench_gpu.bp.RESTORE_VARIANTS)
    assert record["maple_vs_reference"]["speedup"]["50"] > 0
    assert set(record["memory_1000_classes"]) == set(bench_gpu.bp.MEMORY_OPTIONS)
    assert record["evaluation"]["images_per_s"]["restore_m"] > 0
    assert set(record["scaling"]["step_seconds"]["reference"]) == {"10", "50", "100", "200"}
    assert list(tmp_path.glob("gpu-scaling-*.png"))


@pytest.mark.integration
def test_ddp_smoke_check_passes_with_gloo_on_cpu(tmp_path, monkeypatch):
    monkeypatch.setenv("RESTORE_BENCH_OUT", str(tmp_path))
    assert ddp_smoke.main(["--device", "cpu", "--arch", "tiny", "--steps", "2"]) == 0
    (path,) = tmp_path.glob("ddp-*.json")
    record = json.loads(path.read_text())
    assert record["ok"] and record["backend"] == "gloo"
    for result in record["methods"].values():
        assert result["max_param_diff"] <= 1e-5
        assert len(result["losses_ddp"]) == 2
