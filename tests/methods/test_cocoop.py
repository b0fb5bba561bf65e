"""CoCoOp against trainers/cocoop.py: ctx_i = ctx + meta_net(normalised image feature i), one text pass per
image over all class prompts; chunking the images is an implementation detail that must not change logits."""

from __future__ import annotations

import torch

from restore.clip import tokenize
from restore.methods import build_method, make_config
from tests.methods.conftest import CLASSNAMES, train_steps


def trained_cocoop(clip, images, labels, **settings):
    torch.manual_seed(0)
    method = build_method(make_config("cocoop", settings), clip, CLASSNAMES)
    train_steps(method, images, labels, steps=2, lr=5e-2)  # a meta-net that actually varies with the image
    return method.eval()


def test_context_differs_between_images_and_not_for_the_same_image(tiny_clip, images, labels):
    method = trained_cocoop(tiny_clip, images, labels)
    batch = torch.stack([images[0], images[1], images[0]])
    with torch.no_grad():
        feats = tiny_clip.encode_image(batch)
        (ctx,) = method.text.layer_prompts(feats / feats.norm(dim=-1, keepdim=True))
    assert ctx.shape == (3, 4, 32)
    assert not torch.allclose(ctx[0], ctx[1])
    assert torch.equal(ctx[0], ctx[2])


def test_logits_equal_a_per_image_loop(tiny_clip, images, labels):
    method = trained_cocoop(tiny_clip, images, labels)
    # The release's sentences: "a photo of a {class}." with its 4 word tokens replaced by the context.
    tokens = tokenize([f"a photo of a {c.replace('_', ' ')}." for c in CLASSNAMES])
    rows = []
    with torch.no_grad():
        for image in images:
            f = tiny_clip.encode_image(image[None])[0]
            f = f / f.norm()
            ctx = method.text.ctx + method.text.meta_net(f)[None, :]  # (n_ctx, width)
            text = tiny_clip.forward_text(tokens, [ctx]).features
            text = text / text.norm(dim=-1, keepdim=True)
            rows.append(tiny_clip.logit_scale.exp() * text @ f)
        expected = torch.stack(rows)
        torch.testing.assert_close(method.predict(images), expected, rtol=1e-5, atol=1e-5)


def test_image_chunk_does_not_change_logits_or_gradients(tiny_clip, images, labels):
    one = trained_cocoop(tiny_clip, images, labels, image_chunk=1)
    three = build_method(make_config("cocoop", {"image_chunk": 3}), tiny_clip, CLASSNAMES)  # 4 images: 3 + 1
    three.load_learnable_state_dict(one.learnable_state_dict())
    with torch.no_grad():
        torch.testing.assert_close(three.predict(images), one.predict(images), rtol=1e-5, atol=1e-5)
    grads = []
    for method in (one, three):
        method.train()
        method.zero_grad()
        loss, _ = method.compute_loss(method(images), labels)
        loss.backward()
        grads.append({k: p.grad.clone() for k, p in method.named_parameters() if p.requires_grad})
    for k, g in grads[0].items():
        torch.testing.assert_close(grads[1][k], g, rtol=1e-4, atol=1e-6)


def saved_for_backward(method, images, labels) -> tuple[int, dict[str, torch.Tensor]]:
    """Bytes of distinct tensors autograd keeps for backward during one training forward, and the gradients."""
    seen: dict[tuple[int, int], int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        seen[(t.data_ptr(), t.numel())] = t.numel() * t.element_size()
        return t

    method.train()
    method.zero_grad()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss, _ = method.compute_loss(method(images), labels)
    loss.backward()
    return sum(seen.values()), {k: p.grad.clone() for k, p in method.named_parameters() if p.requires_grad}


def test_chunking_alone_keeps_every_chunk_for_backward_checkpointing_does_not(tiny_clip, images, labels):
    reference = trained_cocoop(tiny_clip, images, labels)
    results = {}
    for chunk, ckpt in [(1, False), (4, False), (1, True)]:
        method = build_method(make_config("cocoop", {"image_chunk": chunk, "checkpoint_text": ckpt}), tiny_clip,
                              CLASSNAMES)  # fmt: skip
        method.load_learnable_state_dict(reference.learnable_state_dict())
        results[(chunk, ckpt)] = saved_for_backward(method, images, labels)
    kept_1, grads = results[(1, False)]
    kept_4, _ = results[(4, False)]
    kept_ckpt, grads_ckpt = results[(1, True)]
    assert abs(kept_1 - kept_4) < 0.05 * kept_4  # one image at a time keeps just as much for backward
    assert kept_ckpt < kept_1 / 5  # recomputation keeps only each chunk's inputs
    for k, g in grads.items():
        torch.testing.assert_close(grads_ckpt[k], g, rtol=1e-5, atol=1e-7)
