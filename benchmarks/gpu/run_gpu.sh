#!/usr/bin/env bash
# The issue 8 benchmarks on one CUDA GPU with AMP, then a one-GPU DDP smoke check.
#
# UNTESTED ON A GPU: written on a machine without one. Its Python runs on the CPU in the tests
# (tests/perf/test_gpu_script.py, --device cpu --arch tiny); on a GPU expect the first run to need fixes.
#
# Usage (from anywhere):  bash benchmarks/gpu/run_gpu.sh [--precision bf16|amp|fp32] [--reps N] [--quick]
# JSON (and the scaling plot) go to $RESTORE_BENCH_OUT, default benchmarks/results/.
# About 5-10 minutes on one recent GPU for ViT-B/16 (the reference at 1,000 classes is the longest part).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python}"
export PYTHONPATH="$ROOT/src:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
"$PY" -m benchmarks.gpu.bench_gpu --device cuda "$@"
"$PY" -m benchmarks.gpu.ddp_smoke --device cuda
