"""Does data loading keep up with the model? Loader throughput vs the ViT-B/16 image encoder, same run.

The loader reads the real DTD images (../shared/data, `present` classes) with the CoOp training transform and
2 worker processes; the encoder is our ViT-B/16 with random weights, batch 4 (the papers' batch size), fp32,
on the GPU when there is one, else the CPU. Both are timed interleaved, and the figure is the ratio
loader images/s over encoder images/s: above 1 the loader keeps up.
"""

from __future__ import annotations

import os
import time
from itertools import islice

import torch

from benchmarks.common import interleaved, median, ratio_line

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")


def run(quick: bool) -> dict:
    from restore.clip import build_model, get_config
    from restore.data import load_dataset, make_loader, train_transform

    torch.set_num_threads(2)
    root = os.path.abspath(SHARED)
    if not os.path.isdir(os.path.join(root, "dtd", "images")):
        print(f"  skipped: the real DTD images are not at {root}/dtd/images")
        return {"skipped": "no shared DTD images"}
    items = load_dataset("dtd", root, classes="present").train
    images_per_call = 32 if quick else 64
    batch = 4
    loader = make_loader(
        items, train_transform(), batch, shuffle=True, workers=2, seed=0, persistent_workers=True, drop_last=True
    )

    def load() -> None:
        for _ in islice(loader, images_per_call // batch):
            pass

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = build_model(get_config("ViT-B/16")).eval().to(device)
    x = torch.randn(batch, 3, 224, 224, device=device)
    encoder_batches = 1 if device == "cpu" else 50

    def encode() -> None:
        with torch.no_grad():
            for _ in range(encoder_batches):
                model.encode_image(x)
        if device == "cuda":
            torch.cuda.synchronize()

    repeats = 2 if quick else 5
    t0 = time.perf_counter()
    times = interleaved({"loader": load, "encoder": encode}, repeats=repeats, warmup=1)
    wall = time.perf_counter() - t0
    loader_ips = images_per_call / median(times["loader"])
    encoder_ips = encoder_batches * batch / median(times["encoder"])
    ratio = loader_ips / encoder_ips
    print(f"  loader (DTD, train transform, 2 workers, batch {batch}): {loader_ips:8.1f} images/s")
    print(f"  ViT-B/16 image encoder ({device}, fp32, batch {batch}):      {encoder_ips:8.1f} images/s")
    print(ratio_line("loader / encoder throughput (>= 1: loading keeps up)", ratio, ">= 1", ratio >= 1))
    return {
        "device": device,
        "cpu_threads": torch.get_num_threads(),
        "loader_images_per_s": loader_ips,
        "encoder_images_per_s": encoder_ips,
        "loader_over_encoder": ratio,
        "keeps_up": ratio >= 1,
        "loader_times_s": times["loader"],
        "encoder_times_s": times["encoder"],
        "images_per_loader_call": images_per_call,
        "encoder_batches_per_call": encoder_batches,
        "timed_wall_s": wall,
    }
