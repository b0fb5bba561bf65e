"""Single-branch deep prompts, the baselines of the RESTORE paper's Fig. 4: vision only (VPT-deep) and
language only. Both as released in the MaPLe repository's configs."""

from __future__ import annotations

from dataclasses import dataclass

from restore.clip.model import CLIP
from restore.methods.base import MAX_TEXT_PROMPT_TOKENS, MAX_VISION_PROMPT_TOKENS, MethodConfig, PromptedCLIP, register
from restore.methods.parts import ContextText, DeepVisionPrompts, HandcraftedText
from restore.options import option


@register("vpt", "VPT-deep: learnable vision tokens at every layer; text is the fixed 'a photo of a {class}.'")
@dataclass
class VPTConfig(MethodConfig):
    n_ctx: int = option(8, help="vision tokens per layer (N_CTX_VISION 8)", min=1, max=MAX_VISION_PROMPT_TOKENS)
    depth: int = option(12, help="PROMPT_DEPTH_VISION 12", min=1)
    template: str = option("a photo of a {}.", help="the fixed text (CTX_INIT 'a photo of a')")

    def build(self, clip: CLIP, *, dataset: str | None = None, n_classes: int = 0) -> PromptedCLIP:
        vision = DeepVisionPrompts(clip, self.n_ctx, self.depth)
        return PromptedCLIP(clip, self, text=HandcraftedText((self.template,)), vision=vision, dataset=dataset)


@register("deep_text", "Language-only deep prompts: learnable text tokens at every layer; image tower untouched")
@dataclass
class DeepTextConfig(MethodConfig):
    n_ctx: int = option(4, help="text tokens per layer (N_CTX_TEXT 4)", min=1, max=MAX_TEXT_PROMPT_TOKENS)
    depth: int = option(12, help="PROMPT_DEPTH_TEXT 12", min=1)
    ctx_init: str | None = option("a photo of a", help="CTX_INIT")

    def build(self, clip: CLIP, *, dataset: str | None = None, n_classes: int = 0) -> PromptedCLIP:
        text = ContextText(clip, self.n_ctx, self.ctx_init, depth=self.depth)
        return PromptedCLIP(clip, self, text=text, dataset=dataset)
