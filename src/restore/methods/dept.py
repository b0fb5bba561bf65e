"""DePT (Zhang et al., CVPR 2024): decoupled prompt tuning, a plug-in on a prompt method.

A channel-adjusted transfer (CAT) head — a channel-wise transform per modality and a linear classifier over
the base classes (`ChannelAdjustedHead`) — learns the base-specific knowledge beside the prompts. Training
minimises (1 - λ)·CE(CLIP head) + λ·CE(CAT head) plus the base method's own terms (the release's
``elp_kgcoop.py`` adds KgCoOp's term unweighted); the head learns at 6.5x the prompts' rate. At test time,
base classes take (1 - λ)·CLIP logits + λ·CAT logits; any other class set the CLIP head alone.

``dept_coop``, ``dept_maple`` and ``dept_promptsrc`` are their base method's config plus `DePTOptions`;
`attach_dept` turns any built base model into its DePT model, so "DePT on MaPLe" is one name.
Release: Koorye/DePT (trainers/elp_coop.py, elp_maple.py, trainers/optim.py, train.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from restore.clip.model import CLIP, ShiftRequest
from restore.errors import ConfigError
from restore.methods.base import LossTerm, Output, PromptedCLIP, register
from restore.methods.coop import CoOpConfig
from restore.methods.heads import ChannelAdjustedHead, base_rows
from restore.methods.maple import MaPLeConfig
from restore.methods.promptsrc import PromptSRCConfig, PromptSRCModel
from restore.options import option


@dataclass
class DePTOptions:
    """What DePT adds to its base method (defaults: the release's train.py ``extend_cfg``)."""

    dept_weight: float = option(
        0.7, help="λ: CAT head's share of the loss and of the base-class logits (LINEAR_PROBE.WEIGHT 0.7)", min=0.0,
        max=1.0,
    )  # fmt: skip
    head_lr_mult: float = option(
        6.5, help="CAT head's learning rate / the prompts' (OPTIM.LR_EXP 6.5, trainers/optim.py staged lr)", min=0.0
    )
    channel_transform: bool = option(True, help="channel-wise transform before the head (FILM.LINEAR_PROBE True)")
    dept_fusion: bool = option(
        True, help="base classes: fuse CLIP and CAT logits (TEST_TIME_FUSION True); false: the CAT head alone"
    )


class DePTHeadLoss(LossTerm):
    """λ·CE of the CAT head over the text features of each label and the image features (2B rows)."""

    def __init__(self, weight: float) -> None:
        super().__init__()
        self.weight = weight

    def forward(self, method: PromptedCLIP, out: Output, labels: Tensor) -> dict[str, Tensor]:
        raw_text = out.raw_text_features  # (T*C, D): one row per sentence
        t = method.n_templates
        if t > 1:
            raw_text = raw_text.view(-1, t, raw_text.shape[-1]).mean(1)
        logits, targets = method.dept_head.training_logits(out.raw_image_features, raw_text, labels)
        return {"dept_head": self.weight * F.cross_entropy(logits, targets)}


class DePTMixin(PromptedCLIP):
    """The base model's forward and predict, with the CAT head's logits fused in on base classes at test time."""

    dept_head: ChannelAdjustedHead
    dept_weight: float
    dept_fusion: bool

    def _fuse(self, logits: Tensor, raw_image: Tensor) -> Tensor:
        rows = base_rows(self)
        if rows is None:
            return logits  # novel or foreign classes: CLIP's head only
        head = self.dept_head.image_logits(raw_image, rows.to(raw_image.device)).to(logits.dtype)
        if not self.dept_fusion:
            return head
        return (1.0 - self.dept_weight) * logits + self.dept_weight * head

    def forward(self, images: Tensor, shift: ShiftRequest | str | None = "auto") -> Output:
        out = super().forward(images, shift)
        if not self.training:
            out.logits = self._fuse(out.logits, out.raw_image_features)
        return out

    @torch.no_grad()
    def predict(self, images: Tensor, class_features: Tensor | None = None) -> Tensor:
        if class_features is None:
            return self.forward(images, shift=None).logits
        vision_prompts = self.vision.layer_prompts(self.text.layer_prompts()) if self.vision is not None else []
        raw = self.clip.forward_image(images, vision_prompts).features
        image_features = F.normalize(self._adapt(self.image_adapter, raw), dim=-1)
        logits = self.clip.logit_scale.exp() * image_features @ class_features.t()
        return self._fuse(logits, raw)


class DePTModel(DePTMixin):
    """DePT on a plain `PromptedCLIP` (CoOp, MaPLe, ...)."""


class DePTPromptSRCModel(DePTMixin, PromptSRCModel):
    """DePT on PromptSRC (keeps its prompt aggregation state)."""


_DEPT_OF: dict[type, type] = {PromptedCLIP: DePTModel, PromptSRCModel: DePTPromptSRCModel}


def attach_dept(method: PromptedCLIP, options: DePTOptions, n_classes: int) -> PromptedCLIP:
    """Turn a built base model into its DePT model: the CAT head over ``n_classes`` base classes, its loss,
    the (1 - λ) weight on the CLIP head's cross-entropy and the test-time fusion."""
    dept_class = _DEPT_OF.get(type(method))
    if dept_class is None:
        raise ConfigError(f"DePT has no plug-in for {type(method).__name__} ({method.name})")
    if method.text.conditional:
        raise ConfigError("DePT's head needs one text feature per class; image-conditioned text is not supported")
    if n_classes < 1:
        raise ConfigError("DePT needs the number of training classes to build its head")
    method.__class__ = dept_class
    dim = method.clip.cfg.embed_dim
    method.dept_head = ChannelAdjustedHead(
        dim, n_classes, channel_transform=options.channel_transform, lr_mult=options.head_lr_mult
    )
    method.dept_weight = options.dept_weight
    method.dept_fusion = options.dept_fusion
    method.ce_weight = 1.0 - options.dept_weight
    method.losses.append(DePTHeadLoss(options.dept_weight))
    return method


@register("dept_coop", "DePT on CoOp: CoOp's 16 context tokens + channel-adjusted linear head on base classes (λ=0.7)")
@dataclass
class DePTCoOpConfig(DePTOptions, CoOpConfig):
    def build(self, clip: CLIP, *, dataset: str | None = None, n_classes: int = 0) -> PromptedCLIP:
        return attach_dept(CoOpConfig.build(self, clip, dataset=dataset, n_classes=n_classes), self, n_classes)


@register("dept_maple", "DePT on MaPLe: MaPLe's coupled prompts + channel-adjusted linear head on base classes (λ 0.7)")
@dataclass
class DePTMaPLeConfig(DePTOptions, MaPLeConfig):
    def build(self, clip: CLIP, *, dataset: str | None = None, n_classes: int = 0) -> PromptedCLIP:
        return attach_dept(MaPLeConfig.build(self, clip, dataset=dataset, n_classes=n_classes), self, n_classes)


@register("dept_promptsrc", "DePT on PromptSRC: PromptSRC (L1/KL to frozen CLIP, GPA) + channel-adjusted head (λ=0.7)")
@dataclass
class DePTPromptSRCConfig(DePTOptions, PromptSRCConfig):
    def build(self, clip: CLIP, *, dataset: str | None = None, n_classes: int = 0) -> PromptedCLIP:
        return attach_dept(PromptSRCConfig.build(self, clip, dataset=dataset, n_classes=n_classes), self, n_classes)
