"""Issue 2: text encoder forward+backward with deep prompts for 50 class prompts, truncated vs full 77 tokens.

ViT-B/16's text tower (width 512, 12 layers), random weights, fp32; MaPLe-style prompts (2 tokens, depth 9).
"""

from __future__ import annotations

import torch

from benchmarks.common import interleaved, median, ratio_line
from restore.clip import build_model, get_config, tokenize


def class_names(n: int) -> list[str]:
    # Realistic lengths: ImageNet-style class names of one to three words.
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    return list(IMAGENET_CLASSNAMES[:n])


def run(quick: bool = False) -> dict:
    torch.manual_seed(0)
    clip = build_model(get_config("ViT-B/16")).requires_grad_(False)
    tokens = tokenize([f"a photo of a {c}." for c in class_names(50)])
    width = clip.cfg.text.width
    prompts = [torch.randn(2, width, requires_grad=True) for _ in range(9)]

    def step(truncate: bool):
        def fn():
            feats = clip.forward_text(tokens, prompts, truncate=truncate).features
            feats.square().sum().backward()

        return fn

    reps = 1 if quick else 5
    times = interleaved({"truncated": step(True), "full77": step(False)}, repeats=reps, warmup=1)
    t_trunc, t_full = median(times["truncated"]), median(times["full77"])
    length = int(tokens.argmax(-1).max()) + 1
    print(
        f"  text fwd+bwd, 50 class prompts, deep prompts: truncated to {length} tokens {t_trunc:.3f}s, "
        f"full 77 {t_full:.3f}s"
    )
    print(ratio_line("speed-up of exact truncation", t_full / t_trunc))
    return {"truncated_s": t_trunc, "full77_s": t_full, "tokens": length, "speedup": t_full / t_trunc, "times": times}
