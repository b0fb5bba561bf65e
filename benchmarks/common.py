"""Timing that survives a noisy machine: interleaved repetitions, medians, ratios from the same run."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def interleaved(cases: dict[str, Callable[[], Any]], repeats: int = 5, warmup: int = 1) -> dict[str, list[float]]:
    """Time each case ``repeats`` times, round-robin, so drift in machine load hits every case alike."""
    for fn in cases.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def ratio_line(label: str, value: float, target: str | None = None, ok: bool | None = None) -> str:
    mark = "" if ok is None else ("  [meets target]" if ok else "  [MISSES target]")
    tgt = f"  (target {target})" if target else ""
    return f"  {label:<58} {value:8.2f}x{tgt}{mark}"


def machine() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def write_record(name: str, data: dict[str, Any], folder: Path | None = None) -> Path:
    """One JSON file per benchmark run, with the machine it ran on."""
    folder = folder or Path(os.environ.get("RESTORE_BENCH_OUT", RESULTS))
    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = folder / f"{name}-{stamp}.json"
    payload = {"benchmark": name, "when": stamp, "machine": machine(), **data}
    path.write_text(json.dumps(payload, indent=2, default=float))
    return path
