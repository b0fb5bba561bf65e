"""Heads learned over the training (base) classes, and the one rule for when a test set may use them.

DePT's channel-adjusted linear head and MMRL's representation-token head only know the classes they were
trained on; on any other class set the methods fall back to CLIP's own similarity head. Whether a test set is
"base" is decided by class *names* against `PromptedCLIP.base_classes` (the classes the model was built for,
which a checkpoint keeps), never by the size of the class set: a novel split as large as the base split must
not be mistaken for it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from restore.methods.base import PromptedCLIP


def base_rows(method: PromptedCLIP) -> Tensor | None:
    """For each current class, its row among the training classes; None when any current class is new.

    A subset of the training classes (ImageNet-A/R of an ImageNet model) gets the rows of its classes, as
    DePT's release clips its head for those targets.
    """
    index = {name: i for i, name in enumerate(method.base_classes)}
    if not method.classnames or any(name not in index for name in method.classnames):
        return None
    return torch.tensor([index[name] for name in method.classnames], dtype=torch.long)


def on_base_classes(method: PromptedCLIP) -> bool:
    """Whether the model is set to exactly its training classes, in their order."""
    return bool(method.base_classes) and tuple(method.classnames) == method.base_classes


class _ScaleGrad(torch.autograd.Function):
    """Identity forward; the gradient times ``scale`` backward."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, scale: float) -> Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return grad * ctx.scale, None


def scale_grad(x: Tensor, scale: float) -> Tensor:
    """``x`` whose gradient is multiplied by ``scale``: under SGD with momentum, a learning rate ``scale`` times
    the run's for the parameters behind ``x`` (weight decay excepted), without a second optimiser group."""
    return x if scale == 1.0 or not x.requires_grad else _ScaleGrad.apply(x, scale)


class ChannelTransform(nn.Module):
    """DePT's channel-wise transform (its ``FiLM``): x * scale + bias per channel, starting as the identity."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: Tensor, grad_scale: float = 1.0) -> Tensor:
        scale, bias = scale_grad(self.scale, grad_scale), scale_grad(self.bias, grad_scale)
        return x * scale.to(x.dtype) + bias.to(x.dtype)


class ChannelAdjustedHead(nn.Module):
    """DePT's CAT head: a channel transform per modality, then one linear classifier over the base classes.

    It reads the *unnormalised* tower outputs, as the release does. Training classifies both the image
    features and the text features of each image's label (2B rows); testing classifies images only.
    ``lr_mult`` scales its gradients (the release trains it at 6.5x the prompts' learning rate).
    """

    def __init__(self, dim: int, n_classes: int, *, channel_transform: bool = True, lr_mult: float = 1.0) -> None:
        super().__init__()
        if n_classes < 1:
            raise ValueError("a head over the base classes needs at least one class")
        self.image = ChannelTransform(dim) if channel_transform else None
        self.text = ChannelTransform(dim) if channel_transform else None
        self.linear = nn.Linear(dim, n_classes)
        self.lr_mult = lr_mult

    def _classify(self, x: Tensor, rows: Tensor | None = None) -> Tensor:
        weight = scale_grad(self.linear.weight, self.lr_mult)
        bias = scale_grad(self.linear.bias, self.lr_mult)
        if rows is not None:
            weight, bias = weight[rows], bias[rows]
        return (x.to(weight.dtype) @ weight.t() + bias).float()

    def image_logits(self, raw_image: Tensor, rows: Tensor | None = None) -> Tensor:
        """(B, C) logits of the images; ``rows`` picks the classes of a test set among the base classes."""
        x = self.image(raw_image, self.lr_mult) if self.image is not None else raw_image
        return self._classify(x, rows)

    def training_logits(self, raw_image: Tensor, raw_text: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """(2B, C) logits of the text features of each label, then the images; and the (2B,) targets."""
        text = raw_text[labels]
        if self.text is not None:
            text = self.text(text, self.lr_mult)
        image = self.image(raw_image, self.lr_mult) if self.image is not None else raw_image
        feats = torch.cat([text.to(image.dtype), image])
        return self._classify(feats), torch.cat([labels, labels])
