"""CLIP-LoRA (Zanella & Ben Ayed, CVPRW 2024; MaxZanella/CLIP-LoRA): low-rank adapters on the q, k, v
projections of every attention of both towers, trained with cross-entropy on hand-written class prompts.

Defaults are the release's fixed hyperparameters (run_utils.py argparse defaults): rank 2, alpha 1 (scale
alpha/√r), dropout 0.25 on the adapters' input, all 12 layers of both encoders. Its optimiser and schedule
(AdamW, lr 2e-4, 500 × shots iterations, batch 32) are in restore.methods.schedules.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from restore.clip.model import CLIP, ShiftRequest
from restore.clip.templates import resolve
from restore.errors import ConfigError
from restore.methods.base import MethodConfig, Output, PromptedCLIP, register
from restore.methods.lora import LoRA
from restore.methods.parts import HandcraftedText
from restore.options import option


class LoRACLIP(PromptedCLIP):
    """A PromptedCLIP whose backbone runs with the method's LoRA adapters attached (`LoRA.applied`): in every
    forward, evaluation pass and shift measurement, and never outside them."""

    lora: LoRA

    def tuned_backbone(self) -> AbstractContextManager[None]:
        return self.lora.applied(self.clip)

    def tuned_towers(self) -> set[str]:
        """The towers whose blocks the method changes (RESTORE's regulariser needs both)."""
        return {name for name in ("vision", "text") if self.lora.layers(name)} | self.prompted_towers()

    def forward(self, images: Tensor, shift: ShiftRequest | str | None = "auto") -> Output:
        with self.tuned_backbone():
            return super().forward(images, shift)

    @torch.no_grad()
    def class_features(self) -> Tensor | None:
        with self.tuned_backbone():
            return super().class_features()

    @torch.no_grad()
    def predict(self, images: Tensor, class_features: Tensor | None = None) -> Tensor:
        with self.tuned_backbone():
            return super().predict(images, class_features)


@register("clip_lora", "CLIP-LoRA: rank-2 LoRA on q/k/v of every attention of both towers, hand-written prompts")
@dataclass
class CLIPLoRAConfig(MethodConfig):
    rank: int = option(2, help="r of the low-rank matrices (run_utils.py --r 2)", min=1, max=4096)
    alpha: float = option(1.0, help="scale = alpha / sqrt(rank) (--alpha 1; loralib/layers.py LoRALayer)", min=0.0)
    dropout: float = option(0.25, help="dropout on the adapters' input (--dropout_rate 0.25)", min=0.0, max=1.0)
    targets: list[str] = option(  # noqa: RUF009  (option() is dataclasses.field)
        ["q", "k", "v"], help="adapted projections among q, k, v, o (--params q k v)"
    )
    position: str = option(
        "all", help="adapted layers: all | bottom | mid | up | half-up | half-bottom | top3 (--position all)"
    )
    encoder: Literal["both", "vision", "text"] = option("both", help="towers with adapters (--encoder both)")
    templates: str = option(
        "a photo of a {}.",
        help="class prompt; the release's datasets/*.py set 'a photo of a {}.' for every dataset (their own "
        "templates commented out); single | ensemble | ... as in zeroshot",
    )

    def build(self, clip: CLIP, *, dataset: str | None = None, n_classes: int = 0) -> PromptedCLIP:
        if self.encoder not in ("both", "vision", "text"):
            raise ConfigError(f"unknown LoRA encoder {self.encoder!r}", hint="both, vision or text")
        towers = ["vision", "text"] if self.encoder == "both" else [self.encoder]
        lora = LoRA(
            clip, towers=towers, position=self.position, targets=list(self.targets), rank=self.rank,
            alpha=self.alpha, dropout=self.dropout,
        )  # fmt: skip
        text = HandcraftedText(resolve(self.templates, dataset), spec=self.templates)
        method = LoRACLIP(clip, self, text=text, dataset=dataset)
        method.lora = lora
        for p in lora.parameters():
            p.requires_grad_(True)
        return method
