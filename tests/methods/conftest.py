"""Fixtures for the method tests: a fixed small batch, class names, and a plain SGD training loop."""

from __future__ import annotations

import pytest
import torch

from restore.methods import PromptedCLIP

# Multi-token names, one with an underscore (the CoOp family turns it into a space).
CLASSNAMES = ["golden_retriever", "tabby cat", "red sports car", "oak tree", "lighthouse"]


@pytest.fixture
def images() -> torch.Tensor:
    g = torch.Generator().manual_seed(7)
    return torch.randn(4, 3, 32, 32, generator=g)


@pytest.fixture
def labels() -> torch.Tensor:
    return torch.tensor([0, 1, 2, 3])


def sgd(method: PromptedCLIP, lr: float) -> torch.optim.SGD:
    """The optimiser every released trainer uses (Dassl's SGD: momentum 0.9, weight decay 5e-4)."""
    return torch.optim.SGD(method.learnable_parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)


def loss_of(method: PromptedCLIP, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    out = method(images)
    return method.compute_loss(out, labels)[0]


def train_steps(method: PromptedCLIP, images, labels, steps: int, lr: float, opt=None) -> list[float]:
    """``steps`` SGD steps on one batch (with ``opt``, or a fresh `sgd`); returns the loss before each step."""
    method.train()
    opt = opt or sgd(method, lr)
    losses = []
    for _ in range(steps):
        loss = loss_of(method, images, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses
