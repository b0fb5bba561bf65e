"""``precision: fp16`` as the authors ran it: which tensors their trainers put in half, and the cast that
puts ours there.

The released code (CoOp/CoCoOp/KgCoOp, MaPLe's repository and RESTORE's fork of it, all on Dassl with
``PREC: "fp16"``) builds CLIP with OpenAI's ``convert_weights`` and keeps it so: every Conv/Linear weight and
bias, the attention in-projections and the two output projections in fp16; LayerNorm weights, the token,
positional and class embeddings and the logit scale stay fp32 (cast at use; OpenAI's LayerNorm computes in
fp32 and casts back, `restore.clip.model.LayerNorm`). The learnable tensors are half where a trainer makes
them so, and fp32 elsewhere (cast to the block's dtype where they enter it). Plain SGD then steps the fp16
ones directly: no autocast, no loss scaling, no fp32 master copy (see docs/precision.md for what that does
to the warm-up's lr 1e-5 updates).

`cast_for_precision` is the one place this happens; it is a no-op for every other precision (``amp`` and
``bf16`` keep all weights fp32 and autocast the forward pass instead). It runs on any device, so the dtype
plumbing is tested on CPU; running ``fp16`` is CUDA-only (`restore.engine.run_config.resolve_precision`).
"""

from __future__ import annotations

import torch
from torch import nn

from restore.clip.model import CLIP, Attention
from restore.methods.base import PromptedCLIP
from restore.methods.parts import ConditionalContextText, ContextText, CoupledVisionPrompts
from restore.methods.surgery import SurgeryAdapter

HALF = torch.float16

# The learnable tensors each part's released trainer holds in half under PREC fp16 (attribute names of our
# parts; anything a part holds beyond these stays fp32). Sources, Yaphabates/RESTORE_ (MaPLe's code base):
#  - context `ctx`: built from ``clip_model.token_embedding(...).type(dtype)`` or ``torch.empty(..., dtype=dtype)``
#    with dtype = CLIP's (fp16): trainers/coop.py, cocoop.py, kgcoop.py, independentVL.py (IVLP, language-only,
#    PromptSRC's copy of it), maple.py, maple_fsa.py. Deep text prompts (``compound_prompts_text``, the IVLP
#    blocks' ``VPT_shallow``) are fp32 Parameters, ``.half()``-ed where a block takes them.
#  - CoCoOp's ``meta_net``: ``self.meta_net.half()`` when PREC is fp16 (trainers/cocoop.py).
#  - MaPLe's layer-0 coupling ``proj``: ``self.proj.half()`` (maple.py, maple_fsa.py); the deep couplings
#    (``compound_prompt_projections``) are fp32 Linear layers.
#  - VPT / IVLP vision prompts (``VPT``, ``VPT_shallow``): fp32 (the ``self.VPT.half()`` of clip/model.py is
#    commented out).
#  - RESTORE's surgery adapters: ``Feature_Calibrator().half()`` (maple_fsa.py), LayerNorm included. Our
#    adapters keep α in an fp32 buffer (the released ratio is a Python float at use).
# isinstance order matters: ConditionalContextText is a ContextText.
HALF_PARTS: tuple[tuple[type[nn.Module], tuple[str, ...]], ...] = (
    (ConditionalContextText, ("ctx", "meta_net")),
    (ContextText, ("ctx",)),
    (CoupledVisionPrompts, ("proj",)),
    (SurgeryAdapter, ("ln", "up", "down")),
)


def _half_(tensor: torch.Tensor) -> None:
    """In place (the Parameter object stays, so an optimiser built before or after still holds it)."""
    tensor.data = tensor.data.to(HALF)


def half_backbone(clip: CLIP) -> CLIP:
    """OpenAI's ``convert_weights``: Conv/Linear weights and biases, attention in-projections and the two
    output projections to fp16; LayerNorms, embeddings and the logit scale stay fp32."""
    for module in clip.modules():
        if isinstance(module, nn.Conv2d | nn.Linear):
            for t in (module.weight, module.bias):
                if t is not None:
                    _half_(t)
        if isinstance(module, Attention):
            _half_(module.in_proj_weight)
            _half_(module.in_proj_bias)
    _half_(clip.text_projection)
    _half_(clip.visual.proj)
    return clip


def half_learnable(method: PromptedCLIP) -> list[str]:
    """Put the learnable tensors of `HALF_PARTS` in half; returns their parameter names (sorted)."""
    names: list[str] = []
    for prefix, module in method.named_modules():
        if prefix.startswith("clip.") or prefix == "clip":
            continue
        for kind, attrs in HALF_PARTS:
            if isinstance(module, kind):
                for attr in attrs:
                    target = getattr(module, attr)
                    params = (
                        [(attr, target)]
                        if isinstance(target, nn.Parameter)
                        else [(f"{attr}.{n}", p) for n, p in target.named_parameters()]
                    )
                    for name, p in params:
                        _half_(p)
                        names.append(f"{prefix}.{name}" if prefix else name)
                break
    return sorted(names)


def cast_for_precision(method: PromptedCLIP, precision: str) -> PromptedCLIP:
    """``fp16``: the backbone and the learnable tensors in the dtypes the authors' trainers give them
    (`half_backbone`, `HALF_PARTS`). Every other precision: unchanged (weights fp32)."""
    if precision == "fp16":
        half_backbone(method.clip)
        half_learnable(method)
    return method
