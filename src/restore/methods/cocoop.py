"""CoCoOp (Zhou et al., CVPR 2022): the context is shifted per image by a small meta-net of its feature.

Cost: every image needs its own C class prompts through the text tower (B x C sequences per step), so time
grows linearly with the batch, which is why the paper trains with batch 1. The model encodes them a chunk of
images at a time (``image_chunk``, default 1 image: C sequences at once). At evaluation that bounds memory
to one chunk's class prompts. In training, chunking alone does not: autograd keeps every chunk's activations
until backward (B x C prompts' worth). ``checkpoint_text`` recomputes each chunk's text pass in backward
instead, so only one chunk's activations are alive at a time, for one more text forward per step.
"""

from __future__ import annotations

from dataclasses import dataclass

from restore.clip.model import CLIP
from restore.methods.base import MAX_TEXT_PROMPT_TOKENS, MethodConfig, PromptedCLIP, register
from restore.methods.parts import ConditionalContextText
from restore.options import option


@register("cocoop", "CoCoOp: 4 context tokens + a meta-net shift conditioned on each image (batch 1)")
@dataclass
class CoCoOpConfig(MethodConfig):
    n_ctx: int = option(4, help="context tokens (N_CTX 4)", min=1, max=MAX_TEXT_PROMPT_TOKENS)
    ctx_init: str | None = option("a photo of a", help="CTX_INIT")
    reduction: int = option(16, help="meta-net hidden width = embed_dim / reduction (CoCoOp: 512 -> 32)", min=1)
    image_chunk: int = option(1, help="images whose B x C prompts are encoded at once (memory vs speed)", min=1)
    checkpoint_text: bool = option(
        False, help="recompute each chunk's text pass in backward: training memory of one chunk, +1 text forward"
    )

    def build(self, clip: CLIP, *, dataset: str | None = None, n_classes: int = 0) -> PromptedCLIP:
        text = ConditionalContextText(clip, self.n_ctx, self.ctx_init, self.reduction)
        method = PromptedCLIP(clip, self, text=text, dataset=dataset)
        method.conditional_chunk = self.image_chunk
        method.conditional_checkpoint = self.checkpoint_text
        return method
