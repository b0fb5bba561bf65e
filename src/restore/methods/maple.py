"""MaPLe (Khattak et al., CVPR 2023): deep language prompts; the vision prompts are their linear coupling."""

from __future__ import annotations

from dataclasses import dataclass

from restore.clip.model import CLIP
from restore.methods.base import MAX_TEXT_PROMPT_TOKENS, MethodConfig, PromptedCLIP, register
from restore.methods.parts import ContextText, CoupledVisionPrompts
from restore.options import option


@register("maple", "MaPLe: deep text prompts, vision prompts coupled from them (512->768), depth 9, 2 tokens")
@dataclass
class MaPLeConfig(MethodConfig):
    n_ctx: int = option(2, help="prompt tokens per layer (MaPLe N_CTX 2)", min=1, max=MAX_TEXT_PROMPT_TOKENS)
    depth: int = option(9, help="prompted layers 0..depth-1 (MaPLe PROMPT_DEPTH 9)", min=1)
    ctx_init: str | None = option("a photo of a", help="MaPLe CTX_INIT; its first n_ctx tokens are learnable")

    def parts(self, clip: CLIP) -> tuple[ContextText, CoupledVisionPrompts]:
        return ContextText(clip, self.n_ctx, self.ctx_init, depth=self.depth), CoupledVisionPrompts(clip, self.depth)

    def build(self, clip: CLIP, *, dataset: str | None = None, n_classes: int = 0) -> PromptedCLIP:
        text, vision = self.parts(clip)
        return PromptedCLIP(clip, self, text=text, vision=vision, dataset=dataset)
