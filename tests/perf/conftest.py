"""Fixtures of the performance tests: a tiny CLIP, our methods on it, and the reference models beside them."""

from __future__ import annotations

import pytest
import torch
from benchmarks.reference import reference_for

from restore.clip import build_model, get_config
from restore.methods import build_method, make_config

# Names with shared words and different lengths: the packed text layout shares prefixes among them.
CLASSES = ["red circle", "red square", "blue square", "great white shark", "dog", "tiger_shark", "hen"]


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b|: 1e-5 means agreement to fp32 rounding after a few layers."""
    a, b = a.detach().float(), b.detach().float()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30)) if a.numel() else 0.0


@pytest.fixture
def clip():
    torch.manual_seed(0)
    return build_model(get_config("tiny"))


def images(n: int = 3, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 32, 32, generator=g), torch.arange(n) % len(CLASSES)


def pair(clip, name: str, values: dict | None = None, classes=CLASSES):
    """One of our methods and the reference model computing the same function."""
    torch.manual_seed(3)
    method = build_method(make_config(name, values or {}), clip, list(classes), "Caltech101").train()
    with torch.no_grad():  # move the prompts off their initial values so every term is exercised
        for p in method.learnable_parameters():
            p.add_(0.05 * torch.randn_like(p))
    ref = reference_for(method, list(classes)).train()
    return method, ref
