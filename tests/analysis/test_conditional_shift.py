"""The text-side shift of image-conditioned prompts (CoCoOp): measured per image on that image's prompts."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from restore.analysis.shift import measure_shifts
from restore.clip import build_model, get_config
from restore.methods import build_method, make_config

CLASSES = ["red circle", "blue square", "green triangle"]


def test_cocoop_text_shift_is_the_mean_over_images_of_a_fixed_prompt_method_on_each_image_s_prompts():
    torch.manual_seed(0)
    clip = build_model(get_config("tiny"))
    cocoop = build_method("cocoop", clip, CLASSES)
    with torch.no_grad():  # a meta-net that has learned something: the per-image bias is not negligible
        for p in cocoop.text.parameters():
            p.add_(0.3 * torch.randn_like(p))
    images = torch.randn(5, 3, 32, 32)
    profile = measure_shifts(cocoop, [images[:2], images[2:]])
    assert profile.images == 5 and profile.vision == [0.0] * 3  # CoCoOp prompts no image block

    # Independently: CoOp with the same sentence ("a photo of a {}.", 4 learnable tokens) whose context is
    # set, image by image, to CoCoOp's prompt for that image; its text profile does not depend on images.
    with torch.no_grad():
        features = F.normalize(clip.forward_image(images).features, dim=-1)
        prompts = [cocoop.text.layer_prompts(f[None])[0][0] for f in features]
    coop = build_method(make_config("coop", {"n_ctx": 4, "ctx_init": "a photo of a"}), clip, CLASSES)
    assert torch.equal(coop.tokens, cocoop.tokens)
    per_image = []
    for prompt in prompts:
        with torch.no_grad():
            coop.text.ctx.copy_(prompt)
        per_image.append(measure_shifts(coop, [images[:1]]).text)
    expected = [sum(p[layer] for p in per_image) / len(per_image) for layer in range(3)]
    assert profile.text == pytest.approx(expected, rel=1e-5)
    assert profile.text[0] > 0 and profile.text[1:] == [0.0, 0.0]  # CoCoOp prompts the first block only
    assert len({round(p[0], 6) for p in per_image}) == len(per_image)  # the prompts do differ per image
