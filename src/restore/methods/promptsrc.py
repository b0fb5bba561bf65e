"""PromptSRC (Khattak et al., ICCV 2023): IVLP prompts regularised towards the frozen CLIP (L1 on image and
text features, KL on logits), with textual diversity from a template ensemble and Gaussian-weighted
aggregation of the prompts over epochs."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch.nn.functional as F
from torch import Tensor

from restore.clip.model import CLIP
from restore.clip.templates import resolve
from restore.methods.base import (
    MAX_TEXT_PROMPT_TOKENS,
    MAX_VISION_PROMPT_TOKENS,
    LossTerm,
    MethodConfig,
    Output,
    PromptedCLIP,
    register,
)
from restore.methods.parts import ContextText, DeepVisionPrompts, FrozenTeacher
from restore.options import option


class SelfConsistency(LossTerm):
    """L_SCL of trainers/promptsrc.py: L1(text, frozen text) * w_t + L1(image, frozen image) * w_i +
    KL(frozen || prompted) of the softmaxed logits, summed and divided by the logits' size (the trainer's
    ``F.kl_div(log_softmax(logits), log_softmax(zero_shot_logits), log_target=True)``)."""

    def __init__(self, templates: tuple[str, ...], text_weight: float, image_weight: float, kl_weight: float):
        super().__init__()
        # PromptSRC averages the unnormalised teacher features over templates, then normalises.
        self.teacher = FrozenTeacher(templates, mode="raw_mean")
        self.text_weight, self.image_weight, self.kl_weight = text_weight, image_weight, kl_weight

    def forward(self, method: PromptedCLIP, out: Output, labels: Tensor) -> dict[str, Tensor]:
        clip = method.clip
        ref_text = self.teacher.text_features(clip, method.classnames).to(out.text_features.dtype)
        ref_image = FrozenTeacher.image_features(clip, out.images).to(out.image_features.dtype)
        ref_logits = clip.logit_scale.exp().detach() * ref_image @ ref_text.t()
        kl = (
            F.kl_div(
                F.log_softmax(out.logits, dim=1), F.log_softmax(ref_logits, dim=1), reduction="sum", log_target=True
            )
            / out.logits.numel()
        )
        return {
            "scl_text": self.text_weight * F.l1_loss(out.text_features, ref_text),
            "scl_image": self.image_weight * F.l1_loss(out.image_features, ref_image),
            "scl_logits": self.kl_weight * kl,
        }


def gaussian_weights(epochs: int, mean: float, std: float) -> list[float]:
    """PromptSRC's GPA weights for epochs 1..N: a normal density at each epoch, normalised to sum to 1."""
    dens = [math.exp(-0.5 * ((e - mean) / std) ** 2) / (std * math.sqrt(2 * math.pi)) for e in range(1, epochs + 1)]
    total = sum(dens)
    if total == 0.0:  # every epoch far in the tail: fall back to the epoch nearest the mean
        nearest = min(range(epochs), key=lambda i: abs(i + 1 - mean))
        return [1.0 if i == nearest else 0.0 for i in range(epochs)]
    return [d / total for d in dens]


class PromptAggregation:
    """Gaussian prompt aggregation: after epoch e add w_e * prompts_e; after the last epoch, load the sum."""

    def __init__(self, method: PromptedCLIP, mean: float | None, std: float) -> None:
        self.method, self.mean, self.std = method, mean, std
        self.sum: dict[str, Tensor] | None = None
        self.epochs_seen = 0

    def weights(self, total_epochs: int) -> list[float]:
        mean = self.mean if self.mean is not None else 0.75 * total_epochs
        return gaussian_weights(total_epochs, mean, self.std)

    def __call__(self, epoch: int, total_epochs: int) -> None:
        """``epoch`` counts from 1; the trainer's weight of epoch e is gauss[e - 1]."""
        if not 1 <= epoch <= total_epochs:
            # A 0-based epoch would silently take the last epoch's weight and never load the average.
            raise ValueError(f"prompt aggregation: epoch {epoch} is outside 1..{total_epochs} (epochs count from 1)")
        w = self.weights(total_epochs)[epoch - 1]
        state = self.method.learnable_state_dict()
        if self.sum is None:
            self.sum = {k: w * v.float() for k, v in state.items()}
        else:
            for k, v in state.items():
                self.sum[k] += w * v.float()
        self.epochs_seen = epoch
        if epoch == total_epochs:
            self.method.load_learnable_state_dict({k: v.to(state[k].dtype) for k, v in self.sum.items()})


class PromptSRCModel(PromptedCLIP):
    aggregation: PromptAggregation

    def training_state(self) -> dict[str, Any]:
        """Copies: the accumulator is updated in place, so a live reference would change after saving."""
        agg = self.aggregation
        return {"gpa_sum": _copy(agg.sum), "gpa_epochs_seen": agg.epochs_seen}

    def load_training_state(self, state: dict[str, Any]) -> None:
        self.aggregation.sum = _copy(state.get("gpa_sum"))
        self.aggregation.epochs_seen = int(state.get("gpa_epochs_seen", 0))


def _copy(tensors: dict[str, Tensor] | None) -> dict[str, Tensor] | None:
    return None if tensors is None else {k: v.detach().clone() for k, v in tensors.items()}


@register("promptsrc", "PromptSRC: IVLP 4+4 prompts, depth 9, + L1/KL agreement with frozen CLIP, Gaussian aggregation")
@dataclass
class PromptSRCConfig(MethodConfig):
    n_ctx_text: int = option(4, help="N_CTX_TEXT 4", min=1, max=MAX_TEXT_PROMPT_TOKENS)
    n_ctx_vision: int = option(4, help="N_CTX_VISION 4", min=1, max=MAX_VISION_PROMPT_TOKENS)
    depth_text: int = option(9, help="PROMPT_DEPTH_TEXT 9", min=1)
    depth_vision: int = option(9, help="PROMPT_DEPTH_VISION 9", min=1)
    ctx_init: str | None = option("a photo of a", help="CTX_INIT")
    text_loss_weight: float = option(25.0, help="TEXT_LOSS_WEIGHT 25", min=0.0)
    image_loss_weight: float = option(10.0, help="IMAGE_LOSS_WEIGHT 10", min=0.0)
    kl_weight: float = option(1.0, help="weight of the logits KL (1 in the trainer)", min=0.0)
    teacher_templates: str = option("promptsrc60", help="the frozen teacher's ensemble (trainers/imagenet_templates)")
    gpa: bool = option(True, help="Gaussian prompt aggregation over epochs")
    gpa_mean: float | None = option(None, help="GPA_MEAN; null: 3/4 of the epochs (15 of the released 20)")
    gpa_std: float = option(1.0, help="GPA_STD 1", min=1e-6)

    def parts(self, clip: CLIP) -> tuple[ContextText, DeepVisionPrompts]:
        text = ContextText(clip, self.n_ctx_text, self.ctx_init, depth=self.depth_text)
        return text, DeepVisionPrompts(clip, self.n_ctx_vision, self.depth_vision)

    def loss_terms(self, dataset: str | None) -> list[LossTerm]:
        templates = resolve(self.teacher_templates, dataset)
        return [SelfConsistency(templates, self.text_loss_weight, self.image_loss_weight, self.kl_weight)]

    def attach_aggregation(self, method: PromptedCLIP) -> None:
        method.aggregation = PromptAggregation(method, self.gpa_mean, self.gpa_std)
        if self.gpa:
            method.epoch_hooks.append(method.aggregation)

    def build(self, clip: CLIP, *, dataset: str | None = None, n_classes: int = 0) -> PromptedCLIP:
        text, vision = self.parts(clip)
        method = PromptSRCModel(clip, self, text=text, vision=vision, losses=self.loss_terms(dataset), dataset=dataset)
        self.attach_aggregation(method)
        return method
