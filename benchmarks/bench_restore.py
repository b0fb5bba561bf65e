"""Issue 5: what the feature shift costs. restore_m step time with each shift measure, as a ratio to MaPLe;
and, on the tiny model, how far the sampled estimate of each s_l lies from the exact one."""

from __future__ import annotations

import torch
from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

from benchmarks.common import interleaved, median, ratio_line
from restore.clip import build_model, get_config
from restore.clip.model import ShiftRequest
from restore.methods import build_method, make_config
from restore.methods.feature_shift import activation_shifts

VARIANTS: dict[str, tuple[str, dict, float | None]] = {
    # label: (method, config values, target ratio to MaPLe)
    "maple": ("maple", {}, None),
    "activation, all tokens, differentiable": ("restore_m", {}, 1.6),
    "activation, all tokens, detached": ("restore_m", {"detach_free": True}, 1.2),
    "activation, 25% of image tokens, differentiable": ("restore_m", {"token_fraction": 0.25}, 1.2),
    "parameter proxy": ("restore_m", {"shift_measure": "parameter"}, 1.05),
}


def training_step(method, images, labels, optimizer):
    def fn():
        out = method(images)
        loss, _ = method.compute_loss(out, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return fn


def step_times(arch: str, n_classes: int, batch: int, repeats: int) -> dict[str, float]:
    torch.manual_seed(0)
    clip = build_model(get_config(arch))
    classes = list(IMAGENET_CLASSNAMES[:n_classes])
    size = clip.cfg.vision.image_size
    images, labels = torch.randn(batch, 3, size, size), torch.arange(batch) % n_classes
    cases = {}
    for label, (name, values, _) in VARIANTS.items():
        method = build_method(make_config(name, values), clip, classes, "ImageNet").train()
        opt = torch.optim.SGD(method.learnable_parameters(), lr=1e-4, momentum=0.9)
        cases[label] = training_step(method, images, labels, opt)
    times = interleaved(cases, repeats=repeats, warmup=1)
    return {k: median(v) for k, v in times.items()}


def sampling_error(batches: int = 100, fraction: float = 0.25) -> list[float]:
    """Mean relative error |s_l(sampled) - s_l(exact)| / s_l(exact) per layer on the tiny model."""
    torch.manual_seed(0)
    clip = build_model(get_config("tiny"))
    method = build_method("maple", clip, ["a", "b", "c"])
    text = method.text.layer_prompts()
    vision = [p.detach() for p in method.vision.layer_prompts(text)]
    errors: list[list[float]] = []
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _ in range(batches):
            images = torch.randn(4, 3, 32, 32, generator=g)
            exact = activation_shifts(clip.forward_image(images, vision, ShiftRequest()).shifts)
            sampled = activation_shifts(clip.forward_image(images, vision, ShiftRequest(fraction, generator=g)).shifts)
            errors.append([abs(float(sampled[k] - exact[k])) / float(exact[k]) for k in sorted(exact)])
    return [sum(col) / len(col) for col in zip(*errors, strict=True)]


def run(quick: bool = False) -> dict:
    arch = "ViT-B/16"
    times = step_times(arch, n_classes=50, batch=4, repeats=1 if quick else 3)
    base = times["maple"]
    print(f"  {arch}, batch 4, 50 classes, fp32, {torch.get_num_threads()} threads: MaPLe step {base:.2f}s")
    ratios = {}
    for label, (_, _, target) in VARIANTS.items():
        if target is None:
            continue
        r = times[label] / base
        ratios[label] = r
        print(ratio_line(f"restore_m, {label}", r, f"<= {target}", r <= target))
    err = sampling_error(30 if quick else 100)
    print(
        "  sampled (25% of image tokens) vs exact s_l, tiny model, mean relative error per layer: "
        + ", ".join(f"{e:.3f}" for e in err)
    )
    return {"step_seconds": times, "ratio_to_maple": ratios, "sampling_relative_error": err}
