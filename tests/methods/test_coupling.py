"""MaPLe's vision prompts are a function of its text prompts (one linear coupling per layer, as
trainers/maple.py builds them); IVLP's vision prompts are parameters of their own."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from restore.methods import build_method
from tests.methods.conftest import CLASSNAMES


def prompts(method):
    text = method.text.layer_prompts()
    return text, method.vision.layer_prompts(text)


def test_maple_vision_prompts_are_the_coupling_of_the_text_prompts(tiny_clip):
    torch.manual_seed(0)
    method = build_method("maple", tiny_clip, CLASSNAMES)
    couplings = [method.vision.proj, *method.vision.deep_proj]
    text, vision = prompts(method)
    assert len(text) == len(vision) == 3  # depth 9 capped at the tiny model's 3 layers
    for t, v, lin in zip(text, vision, couplings, strict=True):
        assert v.shape == (2, 64)
        torch.testing.assert_close(v, t @ lin.weight.t() + lin.bias, rtol=0, atol=1e-6)
    # The release clones one initialisation for the deeper layers (_get_clones); the first is its own Linear.
    assert torch.equal(couplings[1].weight, couplings[2].weight)
    assert not torch.equal(couplings[0].weight, couplings[1].weight)


def test_maple_changing_a_text_prompt_changes_that_layers_vision_prompt(tiny_clip, images):
    torch.manual_seed(0)
    method = build_method("maple", tiny_clip, CLASSNAMES)
    _, before = prompts(method)
    before = [v.detach().clone() for v in before]
    image_before = tiny_clip.forward_image(images, before).features
    with torch.no_grad():
        method.text.deep[0].add_(torch.randn_like(method.text.deep[0]))  # the text prompt of layer 1
    text, after = prompts(method)
    assert torch.equal(after[0], before[0]) and torch.equal(after[2], before[2])
    assert not torch.allclose(after[1], before[1])
    lin = method.vision.deep_proj[0]
    torch.testing.assert_close(after[1], F.linear(text[1], lin.weight, lin.bias), rtol=0, atol=1e-6)
    # ... and so the image features, although no vision parameter was touched.
    with torch.no_grad():
        assert not torch.allclose(tiny_clip.forward_image(images, after).features, image_before)


def test_ivlp_vision_prompts_ignore_the_text_prompts(tiny_clip, images):
    torch.manual_seed(0)
    method = build_method("ivlp", tiny_clip, CLASSNAMES)
    _, before = prompts(method)
    for v, p in zip(before, method.vision.prompts, strict=True):
        assert v is p  # the parameters themselves, no function of anything
    before = [v.detach().clone() for v in before]
    with torch.no_grad():
        image_before = method.clip.forward_image(images, before).features
        method.text.ctx.add_(1.0)
        for p in method.text.deep:
            p.add_(1.0)
    _, after = prompts(method)
    for a, b in zip(after, before, strict=True):
        assert torch.equal(a.detach(), b)
    with torch.no_grad():
        assert torch.equal(method.clip.forward_image(images, after).features, image_before)


def test_maple_coupling_gradient_reaches_the_text_prompts_through_the_image_tower(tiny_clip, images):
    """With the text tower's output cut off, the image side alone still trains the text prompts: coupling."""
    torch.manual_seed(0)
    method = build_method("maple", tiny_clip, CLASSNAMES)
    _, vision = prompts(method)
    method.clip.forward_image(images, vision).features.sum().backward()
    assert all(float(p.grad.abs().sum()) > 0 for p in [method.text.ctx, *method.text.deep])
    ivlp = build_method("ivlp", tiny_clip, CLASSNAMES)
    _, vision = prompts(ivlp)
    ivlp.clip.forward_image(images, vision).features.sum().backward()
    assert ivlp.text.ctx.grad is None and all(p.grad is None for p in ivlp.text.deep)
