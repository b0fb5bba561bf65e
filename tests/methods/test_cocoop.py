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
