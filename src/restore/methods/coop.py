"""CoOp (Zhou et al., IJCV 2022): learnable context tokens before the class name, shared by all classes."""

from __future__ import annotations

from dataclasses import dataclass

from restore.clip.model import CLIP
from restore.methods.base import MAX_TEXT_PROMPT_TOKENS, MethodConfig, PromptedCLIP, register
from restore.methods.parts import ContextText
from restore.options import option


@register("coop", "CoOp: 16 learnable context tokens ('X X ... {class}.'), class token at the end")
@dataclass
class CoOpConfig(MethodConfig):
    # CoOp scripts/main.sh: NCTX=16, CSC=False, CTP=end; ctx_init "" (random N(0, 0.02^2)).
    # Set n_ctx=4, ctx_init="a photo of a" for CoOp's initialised variant.
    n_ctx: int = option(16, help="number of learnable context tokens", min=1, max=MAX_TEXT_PROMPT_TOKENS)
    ctx_init: str | None = option(None, help="words to initialise the context from (null: random)")
    class_specific: bool = option(False, help="one context per class (CSC); cannot transfer to new classes")

    def build(self, clip: CLIP, *, dataset: str | None = None, n_classes: int = 0) -> PromptedCLIP:
        text = ContextText(clip, self.n_ctx, self.ctx_init, class_specific=self.class_specific, n_classes=n_classes)
        return PromptedCLIP(clip, self, text=text, dataset=dataset)
