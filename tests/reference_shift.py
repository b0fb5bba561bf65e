"""An independent computation of the feature shift for tests: remove the prompt tokens, call the block again.

It shares nothing with the in-block computation but the block's plain forward (itself checked against
open_clip), so agreement shows the shared-Q/K/V, hidden-key implementation is exact.
"""

from __future__ import annotations

import torch

from restore.clip.model import CLIP


def reference_vision(model: CLIP, images, prompts):
    v = model.visual
    x = v.embed(images)
    n = x.shape[1]
    feats, shifts = None, []
    for layer, block in enumerate(v.transformer.resblocks):
        p = prompts[layer] if layer < len(prompts) else None
        if p is not None:
            p = v.ln_pre(p) if layer == 0 else p
            x = torch.cat([x[:, :n], p.expand(x.shape[0], -1, -1)], dim=1)
        y, _ = block(x)
        if p is not None:
            free, _ = block(x[:, :n])
            shifts.append((y[:, :n] - free).pow(2).sum(-1).mean(1))
        x = y
    feats = v.ln_post(x[:, 0]) @ v.proj
    return feats, shifts


def reference_text(model: CLIP, tokens, prompts):
    eot = tokens.argmax(-1)
    x = model.token_embedding(tokens)
    n = prompts[0].shape[0]
    x = torch.cat([x[:, :1], prompts[0].expand(x.shape[0], -1, -1), x[:, 1 + n :]], 1) + model.positional_embedding
    shifts = []
    for layer, block in enumerate(model.transformer.resblocks):
        p = prompts[layer] if layer < len(prompts) else None
        if p is not None and layer > 0:
            x = torch.cat([x[:, :1], p.expand(x.shape[0], -1, -1), x[:, 1 + n :]], 1)
        y, _ = block(x, causal=True)
        if p is not None:
            keep = torch.cat([torch.arange(1), torch.arange(1 + n, x.shape[1])])
            free, _ = block(x[:, keep], causal=True)
            sq = (y[:, keep] - free).pow(2).sum(-1)
            counted = (keep[None, :] <= eot[:, None]).float()
            shifts.append((sq * counted).sum(1) / counted.sum(1))
        x = y
    x = model.ln_final(x)
    return x[torch.arange(x.shape[0]), eot] @ model.text_projection, shifts
