"""The backbone: parity with open_clip, exact truncation, prompt placement, in-block feature shift, frozen grads."""

from __future__ import annotations

import open_clip
import pytest
import torch

from restore.clip import ShiftRequest, build_model, get_config, tokenize
from tests.reference_shift import reference_text, reference_vision

TEXTS = ["a photo of a dog.", "a cat", "an extraordinarily long description of a very small red bicycle"]


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max() / b.abs().max()) if a.numel() else 0.0


def open_clip_tiny(quick_gelu: bool) -> torch.nn.Module:
    return open_clip.model.CLIP(
        embed_dim=32,
        vision_cfg=dict(image_size=32, patch_size=8, width=64, layers=3, head_width=32),
        text_cfg=dict(context_length=77, vocab_size=49408, width=32, heads=2, layers=3),
        quick_gelu=quick_gelu,
    ).eval()


@pytest.mark.parametrize("quick_gelu", [True, False])
def test_tiny_matches_open_clip(quick_gelu):
    torch.manual_seed(1)
    ref = open_clip_tiny(quick_gelu)
    ours = build_model(get_config("tiny").with_quick_gelu(quick_gelu)).eval()
    ours.load_state_dict(ref.state_dict())
    images, tokens = torch.randn(3, 3, 32, 32), tokenize(TEXTS)
    with torch.no_grad():
        assert rel_err(ours.encode_image(images), ref.encode_image(images)) < 1e-5
        assert rel_err(ours.encode_text(tokens), ref.encode_text(tokens)) < 1e-5
        ref_logits = (
            ref.logit_scale.exp()
            * ref.encode_image(images, normalize=True)
            @ ref.encode_text(tokens, normalize=True).t()
        )
        assert rel_err(ours(images, tokens), ref_logits) < 1e-5


def test_state_dict_names_are_openai_layout(tiny_clip):
    keys = set(tiny_clip.state_dict())
    for k in (
        "visual.conv1.weight",
        "visual.transformer.resblocks.0.attn.in_proj_weight",
        "token_embedding.weight",
        "transformer.resblocks.2.mlp.c_proj.bias",
        "text_projection",
        "logit_scale",
        "ln_final.weight",
    ):
        assert k in keys


def test_truncated_text_equals_full_length(tiny_clip):
    tokens = tokenize(TEXTS)
    with torch.no_grad():
        short = tiny_clip.forward_text(tokens, truncate=True).features
        full = tiny_clip.forward_text(tokens, truncate=False).features
    assert (short - full).abs().max() < 1e-6 * max(1.0, float(full.abs().max()))


def test_truncated_text_with_prompts_equals_full_length(tiny_clip):
    torch.manual_seed(0)
    tokens = tokenize(["X X classname one.", "X X b."])
    prompts = [torch.randn(2, 32) * 0.02, torch.randn(2, 32), torch.randn(2, 32)]
    with torch.no_grad():
        short = tiny_clip.forward_text(tokens, prompts, truncate=True).features
        full = tiny_clip.forward_text(tokens, prompts, truncate=False).features
    assert (short - full).abs().max() < 1e-6 * max(1.0, float(full.abs().max()))


def test_overlong_text_is_a_clear_error():
    from restore.errors import TokenizationError

    with pytest.raises(TokenizationError, match="tokens long"):
        tokenize("word " * 100)


def vision_prompts(depth=2, n=3, width=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, width, generator=g).requires_grad_() for _ in range(depth)]


def text_prompts(depth=2, n=2, width=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(0.1 * torch.randn(n, width, generator=g)).requires_grad_() for _ in range(depth)]


def test_vision_shift_equals_independent_computation(tiny_clip):
    images = torch.randn(2, 3, 32, 32)
    prompts = vision_prompts()
    out = tiny_clip.forward_image(images, prompts, ShiftRequest())
    ref_feats, ref_shifts = reference_vision(tiny_clip, images, prompts)
    assert rel_err(out.features, ref_feats) < 1e-5
    measured = [s for s in out.shifts if s is not None]
    assert len(measured) == 2 and out.shifts[2] is None
    for s, r in zip(measured, ref_shifts, strict=True):
        assert rel_err(s.shift_ms, r) < 1e-5
        assert float(r.min()) > 0
    # gradients through both branches agree with the reference
    loss = sum(s.shift_ms.sqrt().mean() for s in measured)
    ref_loss = sum(r.sqrt().mean() for r in ref_shifts)
    g = torch.autograd.grad(loss, prompts)
    g_ref = torch.autograd.grad(ref_loss, prompts)
    for a, b in zip(g, g_ref, strict=True):
        assert rel_err(a, b) < 1e-5


def test_text_shift_equals_independent_computation(tiny_clip):
    tokens = tokenize(["X X red dog.", "X X a much longer class name here."])
    prompts = text_prompts()
    out = tiny_clip.forward_text(tokens, prompts, ShiftRequest(), truncate=False)
    ref_feats, ref_shifts = reference_text(tiny_clip, tokens, prompts)
    assert rel_err(out.features, ref_feats) < 1e-5
    measured = [s for s in out.shifts if s is not None]
    assert len(measured) == 2
    for s, r in zip(measured, ref_shifts, strict=True):
        assert rel_err(s.shift_ms, r) < 1e-5
    loss = sum(s.shift_ms.mean() for s in measured)
    g = torch.autograd.grad(loss, prompts)
    g_ref = torch.autograd.grad(sum(r.mean() for r in ref_shifts), prompts)
    for a, b in zip(g, g_ref, strict=True):
        assert rel_err(a, b) < 1e-5


def test_shift_without_gradient_matches(tiny_clip):
    images = torch.randn(2, 3, 32, 32)
    prompts = [p.detach() for p in vision_prompts()]
    with torch.no_grad():
        out = tiny_clip.forward_image(images, prompts, ShiftRequest())
        _, ref = reference_vision(tiny_clip, images, prompts)
    for s, r in zip([s for s in out.shifts if s is not None], ref, strict=True):
        assert rel_err(s.shift_ms, r) < 1e-5


def test_detached_shift_has_same_value_and_grad_only_through_prompted_branch(tiny_clip):
    images = torch.randn(2, 3, 32, 32)
    prompts = vision_prompts()
    full = tiny_clip.forward_image(images, prompts, ShiftRequest())
    det = tiny_clip.forward_image(images, prompts, ShiftRequest(detach=True))
    for a, b in zip(full.shifts, det.shifts, strict=True):
        if a is not None:
            assert torch.allclose(a.shift_ms, b.shift_ms, rtol=1e-6)
    # the detached prompt-free branch does not depend on layer-1 prompts (they are not its keys), nor does the
    # prompted branch's layer-0 output; a change of value is only through the prompted branch.
    loss = sum(s.shift_ms.mean() for s in det.shifts if s is not None)
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in prompts)


def test_sampled_shift_is_exact_at_fraction_one_and_unbiased(tiny_clip):
    images = torch.randn(4, 3, 32, 32)
    prompts = [p.detach() for p in vision_prompts()]
    with torch.no_grad():
        exact = tiny_clip.forward_image(images, prompts, ShiftRequest()).shifts[0].shift_ms
        one = tiny_clip.forward_image(images, prompts, ShiftRequest(fraction=1.0)).shifts[0].shift_ms
        assert torch.equal(exact, one)
        g = torch.Generator().manual_seed(0)
        draws = torch.stack(
            [
                tiny_clip.forward_image(images, prompts, ShiftRequest(0.25, generator=g)).shifts[0].shift_ms
                for _ in range(400)
            ]
        )
    # unbiased: the mean of many sampled estimates lies within 4 standard errors of the exact mean square
    stderr = draws.std(0) / len(draws) ** 0.5
    assert float(stderr.min()) > 0  # it really samples
    assert bool(((draws.mean(0) - exact).abs() < 4 * stderr).all())


def test_no_prompts_means_no_shift_and_unchanged_features(tiny_clip):
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = tiny_clip.forward_image(images, [], ShiftRequest())
    assert all(s is None for s in out.shifts)
    assert torch.equal(out.features, tiny_clip.encode_image(images))


def test_vision_prompts_change_features_and_flow_past_depth(tiny_clip):
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        a = tiny_clip.forward_image(images, [p.detach() for p in vision_prompts(depth=1)]).features
        b = tiny_clip.encode_image(images)
    assert not torch.allclose(a, b)


def test_only_prompts_get_gradients_and_backbone_is_bitwise_unchanged(tiny_clip):
    tiny_clip.requires_grad_(False)
    before = {k: v.clone() for k, v in tiny_clip.state_dict().items()}
    vp, tp = vision_prompts(), text_prompts()
    opt = torch.optim.SGD([*vp, *tp], lr=0.1, momentum=0.9, weight_decay=5e-4)
    images, tokens = torch.randn(2, 3, 32, 32), tokenize(["X X dog.", "X X cat."])
    for _ in range(2):
        img = tiny_clip.forward_image(images, vp, ShiftRequest())
        txt = tiny_clip.forward_text(tokens, tp, ShiftRequest())
        logits = tiny_clip.logits(img.features, txt.features)
        loss = torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1]))
        loss = loss + sum(s.shift_ms.mean() for s in img.shifts + txt.shifts if s is not None)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in vp + tp)
    assert all(p.grad is None for p in tiny_clip.parameters())
    after = tiny_clip.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_gradient_checkpointing_gives_same_grads(tiny_clip):
    tokens = tokenize(["X X dog.", "X X cat."])
    tp = text_prompts()
    loss = tiny_clip.forward_text(tokens, tp, ShiftRequest()).features.square().sum()
    g1 = torch.autograd.grad(loss, tp)
    tiny_clip.transformer.grad_checkpointing = True
    loss = tiny_clip.forward_text(tokens, tp, ShiftRequest()).features.square().sum()
    g2 = torch.autograd.grad(loss, tp)
    for a, b in zip(g1, g2, strict=True):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-7)


def test_prompt_free_calls_are_counted(tiny_clip):
    blocks = list(tiny_clip.visual.transformer.resblocks)
    images = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        tiny_clip.forward_image(images, [p.detach() for p in vision_prompts()])
        assert sum(b.prompt_free_calls for b in blocks) == 0
        tiny_clip.forward_image(images, [p.detach() for p in vision_prompts()], ShiftRequest())
    assert sum(b.prompt_free_calls for b in blocks) == 2
