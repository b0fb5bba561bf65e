"""IVLP (independent vision-language prompting, the MaPLe paper's baseline): deep prompts in both towers,
learned independently."""

from __future__ import annotations

from dataclasses import dataclass

from restore.clip.model import CLIP
from restore.methods.base import MAX_TEXT_PROMPT_TOKENS, MAX_VISION_PROMPT_TOKENS, MethodConfig, PromptedCLIP, register
from restore.methods.parts import ContextText, DeepVisionPrompts
from restore.options import option


@register("ivlp", "IVLP: independent deep vision and language prompts (4+4 tokens, depth 9)")
@dataclass
class IVLPConfig(MethodConfig):
    n_ctx_text: int = option(4, help="text prompt tokens per layer (N_CTX_TEXT 4)", min=1, max=MAX_TEXT_PROMPT_TOKENS)
    n_ctx_vision: int = option(
        4, help="vision prompt tokens per layer (N_CTX_VISION 4)", min=1, max=MAX_VISION_PROMPT_TOKENS
    )
    depth_text: int = option(9, help="PROMPT_DEPTH_TEXT 9", min=1)
    depth_vision: int = option(9, help="PROMPT_DEPTH_VISION 9", min=1)
    ctx_init: str | None = option("a photo of a", help="CTX_INIT")

    def parts(self, clip: CLIP) -> tuple[ContextText, DeepVisionPrompts]:
        text = ContextText(clip, self.n_ctx_text, self.ctx_init, depth=self.depth_text)
        return text, DeepVisionPrompts(clip, self.n_ctx_vision, self.depth_vision)

    def build(self, clip: CLIP, *, dataset: str | None = None, n_classes: int = 0) -> PromptedCLIP:
        text, vision = self.parts(clip)
        return PromptedCLIP(clip, self, text=text, vision=vision, dataset=dataset)
