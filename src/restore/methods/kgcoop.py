"""KgCoOp (Yao et al., CVPR 2023): CoOp plus a pull of the learned class features towards the frozen
CLIP's hand-written-prompt features."""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

from restore.clip.model import CLIP
from restore.clip.templates import KGCOOP_TEMPLATES
from restore.methods.base import MAX_TEXT_PROMPT_TOKENS, LossTerm, MethodConfig, Output, PromptedCLIP, register
from restore.methods.parts import ContextText, FrozenTeacher
from restore.options import option


class KnowledgeGuidance(LossTerm):
    """w * (1 - mean_i cos(w_i, w_i^clip)), as the released trainer computes it (the paper writes a squared
    Euclidean distance; on unit vectors that is 2 * (1 - cos), the same up to the weight)."""

    def __init__(self, template: str, weight: float) -> None:
        super().__init__()
        self.teacher = FrozenTeacher((template,))
        self.weight = weight

    def forward(self, method: PromptedCLIP, out: Output, labels: Tensor) -> dict[str, Tensor]:
        ref = self.teacher.text_features(method.clip, method.classnames).to(out.text_features.dtype)
        score = 1.0 - F.cosine_similarity(out.text_features, ref, dim=-1, eps=1e-7).mean()
        return {"kg": self.weight * score}


@register("kgcoop", "KgCoOp: CoOp ('a photo of a' init) + distance to frozen 'a photo of a {}.' features (w=8)")
@dataclass
class KgCoOpConfig(MethodConfig):
    n_ctx: int = option(4, help="context tokens (scripts/base2new_train.sh NCTX=4)", min=1, max=MAX_TEXT_PROMPT_TOKENS)
    ctx_init: str | None = option("a photo of a", help="the trainer initialises from 'a photo of a'")
    weight: float = option(8.0, help="W, the knowledge-guidance weight (scripts WEIGHT=8.0)", min=0.0)
    template: str | None = option(None, help="teacher template; null: KgCoOp's per-dataset template")

    def build(self, clip: CLIP, *, dataset: str | None = None, n_classes: int = 0) -> PromptedCLIP:
        text = ContextText(clip, self.n_ctx, self.ctx_init)
        template = self.template or KGCOOP_TEMPLATES.get(dataset or "", "a photo of a {}.")
        return PromptedCLIP(clip, self, text=text, losses=[KnowledgeGuidance(template, self.weight)], dataset=dataset)
