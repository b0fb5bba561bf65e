"""Training-step time of every registered method on ViT-B/16, as ratios to CoOp and to MaPLe measured in one run.

One step = forward, the method's loss (cross-entropy plus its terms), backward, SGD step; batch 4, 50 classes,
fp32, random weights (the cost does not depend on the values), 2 threads. Methods are timed round-robin
(`interleaved`) so machine load hits them alike; the figures are medians. The first step of each method is
timed apart: it holds one-time work such as PromptSRC's 60-template teacher features. CoCoOp runs at batch
4 like the rest (its paper trains at batch 1): every image needs its own pass of all class prompts through
the text tower, so its cost per image is reported too, and so is the price of its ``checkpoint_text`` option.
Also recorded per method: learnable parameters and the checkpoint's size on disk.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

from benchmarks.common import interleaved, median, ratio_line
from restore.clip import build_model, get_config
from restore.methods import build_method, make_config, method_names
from restore.methods.model_file import save_method

ARCH, BATCH, N_CLASSES, THREADS = "ViT-B/16", 4, 50, 2
BASELINE = "coop"
REFERENCE = "maple"  # the methods that came after RESTORE are compared with MaPLe (issue: new methods' cost)
CKPT_CASE = "cocoop+checkpoint_text"


def _step_fn(method, images: torch.Tensor, labels: torch.Tensor):
    opt = torch.optim.SGD(method.learnable_parameters(), lr=1e-4, momentum=0.9, weight_decay=5e-4)

    def step() -> None:
        out = method(images)
        loss, _ = method.compute_loss(out, labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def _checkpoint_bytes(method) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        return save_method(method, Path(tmp) / "m.safetensors").stat().st_size


def run(quick: bool) -> dict[str, Any]:
    threads_before = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        return _run(quick)
    finally:
        torch.set_num_threads(threads_before)


def _run(quick: bool) -> dict[str, Any]:
    repeats = 1 if quick else 3
    torch.manual_seed(0)
    t0 = time.perf_counter()
    clip = build_model(get_config(ARCH)).eval()
    build_s = time.perf_counter() - t0
    classnames = list(IMAGENET_CLASSNAMES[:N_CLASSES])
    images = torch.randn(BATCH, 3, 224, 224)
    labels = torch.arange(BATCH) % N_CLASSES
    names = [n for n in method_names() if n != "zeroshot"]  # zero-shot has no training step
    names = [BASELINE, *[n for n in names if n != BASELINE]]

    # CoCoOp again with its per-chunk text recomputation (training memory of one image's prompts).
    variants = {n: make_config(n) for n in names}
    if "cocoop" in variants:
        variants[CKPT_CASE] = make_config("cocoop", {"checkpoint_text": True})
    methods, steps, first, params, ckpt = {}, {}, {}, {}, {}
    for name, config in variants.items():
        torch.manual_seed(0)
        method = build_method(config, clip, classnames).train()
        methods[name] = method
        steps[name] = _step_fn(method, images, labels)
        params[name] = sum(p.numel() for p in method.learnable_parameters())
        ckpt[name] = _checkpoint_bytes(method)
        t = time.perf_counter()
        steps[name]()  # the warm-up step, timed on its own: one-time work (teacher features) happens here
        first[name] = time.perf_counter() - t
        print(f"  first step {name:<10} {first[name]:7.2f} s", flush=True)

    times = interleaved(steps, repeats=repeats, warmup=0)
    med = {n: median(ts) for n, ts in times.items()}
    base = med[BASELINE]
    print(f"  {ARCH}, batch {BATCH}, {N_CLASSES} classes, fp32, {THREADS} threads, median of {repeats}")
    print(f"  {BASELINE} step: {base:.2f} s")
    for n in variants:
        print(ratio_line(f"{n} step / {BASELINE} step ({med[n]:.2f} s)", med[n] / base))
    if REFERENCE in med:
        for n in variants:
            print(ratio_line(f"{n} step / {REFERENCE} step", med[n] / med[REFERENCE]))
    if "cocoop" in med:
        per_image = med["cocoop"] / BATCH
        print(f"  cocoop at batch {BATCH}: {per_image:.2f} s per image ({BATCH} x {N_CLASSES} class prompts per step)")
        print(ratio_line("cocoop checkpoint_text / plain (memory of one image)", med[CKPT_CASE] / med["cocoop"]))
    for n in variants:
        print(f"  {n:<10} learnable parameters {params[n]:>10,d}   checkpoint {ckpt[n]:>10,d} bytes")
    return {
        "arch": ARCH,
        "batch": BATCH,
        "classes": N_CLASSES,
        "threads": THREADS,
        "dtype": "float32",
        "repeats": repeats,
        "backbone_build_s": build_s,
        "step_s": times,
        "median_step_s": med,
        "ratio_to_coop": {n: med[n] / base for n in variants},
        "ratio_to_maple": {n: med[n] / med[REFERENCE] for n in variants} if REFERENCE in med else {},
        "first_step_s": first,
        "cocoop_batch": BATCH,
        "cocoop_per_image_s": med["cocoop"] / BATCH if "cocoop" in med else None,
        "cocoop_checkpoint_text_ratio": med[CKPT_CASE] / med["cocoop"] if CKPT_CASE in med else None,
        "learnable_parameters": params,
        "checkpoint_bytes": ckpt,
    }
