"""The synthetic world: what each design choice buys in generator speed and pretraining throughput.

- Generator: batched rendering vs one image at a time; generation time as a share of a training step.
- Pretraining pairs/s of candidate model sizes, each a full step (forward, backward, AdamW) on the same
  batch, timed interleaved; ratios against the issue's trial model (64x64, patch 8, width 192, 6+4 layers,
  full 49,408-row token embedding).
"""

from __future__ import annotations

import time
from typing import Any

import torch

from benchmarks.common import interleaved, median, ratio_line
from restore.world.generator import WorldConfig, render, sample_scenes
from restore.world.pretrain import PretrainConfig, contrastive_loss, make_batch
from restore.world.world_clip import ModelSize, build_world_clip

CANDIDATES: dict[str, ModelSize] = {
    "trial: 64px p8 w192 6+4 full-vocab": ModelSize(64, 8, 192, 6, 192, 4, 192, head_width=64, compact_embedding=False),
    "64px p8 w192 6+4 compact-vocab": ModelSize(64, 8, 192, 6, 192, 4, 192, head_width=64),
    "48px p8 w192 4+3": ModelSize(48, 8, 192, 4, 128, 3, 128),
    "48px p6 w128 4+3": ModelSize(48, 6, 128, 4, 128, 3, 128),
    "32px p4 w128 4+3": ModelSize(32, 4, 128, 4, 128, 3, 128),
    "48px p8 w128 4+3 (shipped)": ModelSize(48, 8, 128, 4, 128, 3, 128),
    "48px p8 w96 4+3": ModelSize(48, 8, 96, 4, 96, 3, 96),
}


def _step_fn(size: ModelSize, batch: int):
    torch.manual_seed(0)
    model = build_world_clip(size).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    cfg = PretrainConfig(batch_size=batch, model=size, world=WorldConfig(image_size=size.image_size))
    images, tokens, targets = make_batch(cfg, 0)

    def step() -> None:
        loss = contrastive_loss(model(images, tokens), targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step, sum(p.numel() for p in model.parameters())


def run(quick: bool) -> dict[str, Any]:
    threads = 2
    torch.set_num_threads(threads)
    batch = 64 if quick else 256
    repeats = 2 if quick else 4
    out: dict[str, Any] = {"batch": batch, "threads": threads}

    # --- generator ---------------------------------------------------------------------------------------
    cfg = WorldConfig(image_size=48)
    scenes = sample_scenes(0, range(batch), cfg)
    gen = interleaved(
        {
            "sample": lambda: sample_scenes(1, range(batch), cfg),
            "render batched": lambda: render(scenes, 48),
            "render one by one": lambda: [render([s], 48) for s in scenes],
            "generate + tokenise + targets": lambda: make_batch(PretrainConfig(batch_size=batch), 5),
        },
        repeats=repeats,
    )
    per = {k: median(v) for k, v in gen.items()}
    print(f"  generator, batch {batch} at 48x48:")
    print(f"    {batch / (per['sample'] + per['render batched']):8.0f} images/s (scene sampling + batched render)")
    print(ratio_line("batched render vs one image at a time", per["render one by one"] / per["render batched"]))
    out["generator"] = {
        "images_per_s": batch / (per["sample"] + per["render batched"]),
        "batched_render_speedup": per["render one by one"] / per["render batched"],
        "make_batch_s": per["generate + tokenise + targets"],
    }

    # --- model sizes -------------------------------------------------------------------------------------
    names = list(CANDIDATES) if not quick else [n for n in CANDIDATES if "p4" not in n and "p6" not in n]
    steps, params = {}, {}
    for name in names:
        steps[name], params[name] = _step_fn(CANDIDATES[name], batch)
    times = interleaved(steps, repeats=repeats, warmup=1)
    base = next(iter(names))
    shipped = next(n for n in names if "shipped" in n)
    print(f"  pretraining step (forward + backward + AdamW), batch {batch}, {threads} threads:")
    rows = {}
    for name in names:
        t = median(times[name])
        rows[name] = {"params": params[name], "step_s": t, "pairs_per_s": batch / t}
        print(f"    {name:<40} {params[name] / 1e6:6.2f} M params  {batch / t:7.0f} pairs/s")
    print(ratio_line("shipped size vs the trial model, pairs/s", median(times[base]) / median(times[shipped])))
    gen_share = per["generate + tokenise + targets"] / (per["generate + tokenise + targets"] + median(times[shipped]))
    print(f"    data generation share of a shipped-size step: {100 * gen_share:.0f}%")
    out["models"] = rows
    out["shipped_vs_trial_speedup"] = median(times[base]) / median(times[shipped])
    out["generation_share"] = gen_share
    out["when"] = time.strftime("%Y-%m-%d %H:%M")
    return out
