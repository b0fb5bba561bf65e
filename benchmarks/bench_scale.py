"""What scaling out costs: per-sample augmentation seeds in the loader, and a sweep run's own process.

1. Loading a training image with its augmentation seeded from (seed, epoch, index) (the engine's
   `SampleSeeded`: three generators seeded, then restored) against loading it plainly: the real DTD images
   (../shared/data), CoOp's training transform at 224 px, in the main process, interleaved.
2. The local sweep executor's price for isolating a run: a cell run in a fresh child process (Python start,
   imports) against the same cell run in this process, both with a cell that stops at planning (its data
   folder is missing), so the figure is the fixed cost per run and nothing else.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from benchmarks.common import interleaved, median, ratio_line

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")
SRC = Path(__file__).resolve().parents[1] / "src"


def _seeding(quick: bool) -> dict:
    from restore.data import ImageDataset, load_dataset, train_transform
    from restore.engine.seeding import SampleSeeded

    root = os.path.abspath(SHARED)
    if not os.path.isdir(os.path.join(root, "dtd", "images")):
        print(f"  skipped: the real DTD images are not at {root}/dtd/images")
        return {"skipped": "no shared DTD images"}
    items = load_dataset("dtd", root, classes="present").train[: 16 if quick else 64]
    plain = ImageDataset(items, train_transform(224))
    seeded = SampleSeeded(plain, seed=1, epoch=0)

    def load(ds) -> None:
        for i in range(len(items)):
            ds[i]

    times = interleaved({"plain": lambda: load(plain), "seeded": lambda: load(seeded)}, repeats=3 if quick else 7)
    ratio = median(times["seeded"]) / median(times["plain"])
    per_image_ms = 1000 * median(times["plain"]) / len(items)
    print(f"  plain load + augment: {per_image_ms:.2f} ms/image ({len(items)} DTD images, 224 px)")
    print(ratio_line("per-sample seeded / plain loading time", ratio, "<= 1.05", ratio <= 1.05))
    return {"images": len(items), "plain_ms_per_image": per_image_ms, "seeded_over_plain": ratio, "times": times}


def _child_process(quick: bool) -> dict:
    from restore.scale.worker import run_cell

    with tempfile.TemporaryDirectory() as tmp:
        spec = {
            "config": {"method": {"name": "coop"}, "protocol": "b2n", "model": {"backbone": "random:tiny"},
                       "data": {"dataset": "dtd", "root": tmp, "workers": 0}, "out": tmp},
            "threads": 1, "device": "cpu",
        }  # fmt: skip
        spec_path, out_path = Path(tmp) / "spec.json", Path(tmp) / "out.json"
        spec_path.write_text(json.dumps(spec))
        env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}

        def child() -> None:
            cmd = [sys.executable, "-m", "restore.scale.worker", str(spec_path), str(out_path)]
            subprocess.run(cmd, env=env, check=True, capture_output=True)
            assert json.loads(out_path.read_text())["status"] == "failed"

        def here() -> None:
            assert run_cell(spec)["status"] == "failed"

        times = interleaved({"child": child, "in_process": here}, repeats=2 if quick else 5)
    overhead = median(times["child"]) - median(times["in_process"])
    print(f"  a run's own process costs {overhead:.2f} s (start + imports) before it does anything")
    return {"overhead_s": overhead, "times": times}


def run(quick: bool) -> dict:
    torch.set_num_threads(1)
    return {"seeding": _seeding(quick), "child_process": _child_process(quick)}
