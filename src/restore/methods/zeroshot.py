"""Zero-shot CLIP: no training; one template per dataset (CoOp's) or CLIP's ensemble."""

from __future__ import annotations

from dataclasses import dataclass

from restore.clip.model import CLIP
from restore.clip.templates import resolve
from restore.methods.base import MethodConfig, PromptedCLIP, register
from restore.methods.parts import HandcraftedText
from restore.options import option


@register("zeroshot", "Zero-shot CLIP (Radford et al. 2021): class-name prompts, no training")
@dataclass
class ZeroShotConfig(MethodConfig):
    # CoOp's zero-shot baseline uses one hand-written template per dataset (trainers/zsclip.py).
    templates: str = option("single", help="single | ensemble | imagenet80 | promptsrc60 | a template with {}")

    def build(self, clip: CLIP, *, dataset: str | None = None, n_classes: int = 0) -> PromptedCLIP:
        return PromptedCLIP(
            clip, self, text=HandcraftedText(resolve(self.templates, dataset), spec=self.templates), dataset=dataset
        )
