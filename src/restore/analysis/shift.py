"""Per-layer feature-shift profile of a (trained) method on a set of images: the paper's explanatory tool.

The profile is what `restore analyze` writes and what a run records at the end of training (``metrics.shift``):
``s_l^v`` (mean over images), ``s_l^t`` (mean over the class prompts), their squared discrepancy per layer and
the totals. The shift of a block is that of its learnable part: its prompt tokens, or its weight delta (LoRA: the
block run with and without ΔW on the same input). Layers without either count as 0; zero-shot CLIP has every
shift 0.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from restore.clip.model import ShiftRequest
from restore.methods.base import PromptedCLIP
from restore.methods.feature_shift import (
    Normalisation,
    activation_shifts,
    parameter_shifts,
)


@dataclass
class ShiftProfile:
    measure: str  # "activation/rms", "activation/relative" or "parameter"
    vision: list[float]  # s_l^v per layer of the image tower
    text: list[float]  # s_l^t per layer of the text tower
    images: int

    @property
    def discrepancy(self) -> list[float]:
        n = max(len(self.vision), len(self.text))
        v = self.vision + [0.0] * (n - len(self.vision))
        t = self.text + [0.0] * (n - len(self.text))
        return [(a - b) ** 2 for a, b in zip(v, t, strict=True)]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["discrepancy"] = self.discrepancy
        d["total_vision"] = sum(self.vision)
        d["total_text"] = sum(self.text)
        d["total_discrepancy"] = sum(self.discrepancy)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ShiftProfile:
        return cls(d["measure"], list(d["vision"]), list(d["text"]), int(d["images"]))


def _dense(shifts: dict[int, Tensor], layers: int) -> list[float]:
    return [float(shifts[i]) if i in shifts else 0.0 for i in range(layers)]


@torch.no_grad()
def measure_shifts(
    method: PromptedCLIP,
    batches: Iterable[tuple[Tensor, Tensor] | Tensor],
    *,
    measure: str = "activation",
    normalisation: Normalisation = "rms",
    device: torch.device | str | None = None,
) -> ShiftProfile:
    """The shift profile of ``method`` over ``batches`` (of images, or (images, labels) pairs).

    Vision magnitudes are averaged over every image (each batch weighted by its size); the text side is
    measured once on the method's current classes, or, when its prompts depend on the image (CoCoOp), per
    image on that image's prompts and averaged over the images like the vision side.
    """
    was_training = method.training
    method.eval()
    device = device or next(method.parameters()).device
    n_v, n_t = method.clip.cfg.vision.layers, method.clip.cfg.text.layers
    if measure == "parameter":
        initial = method.shift_measure
        if initial is None or initial.measure != "parameter":
            raise ValueError("the parameter measure needs the first-step prompts a parameter-measure run stored")
        text_prompts = method.text.layer_prompts() if not method.text.conditional else []
        vision_prompts = method.vision.layer_prompts(text_prompts) if method.vision is not None else []
        vis = _dense(parameter_shifts(vision_prompts, initial.initial("vision")), n_v)
        txt = _dense(parameter_shifts(text_prompts, initial.initial("text")), n_t)
        method.train(was_training)
        return ShiftProfile("parameter", vis, txt, 0)
    request = ShiftRequest()
    # The method's own hooks run its towers (a method with its own towers, MMRL, measures there); one that
    # changes the blocks' weights (LoRA) runs them with the weights attached.
    conditional = method.text.conditional
    with method.tuned_backbone():
        txt = _dense(activation_shifts(method.text_shift_stats(request), normalisation), n_t)
        sums, text_sums = [0.0] * n_v, [0.0] * n_t
        count = 0
        for item in batches:
            images = item[0] if isinstance(item, tuple | list) else item
            images = images.to(device)
            for layer, s in enumerate(method.image_shift_stats(images, request)):
                if s is not None:
                    per_image = activation_shifts([s], normalisation)[0]  # mean over this batch
                    sums[layer] += float(per_image) * images.shape[0]
            if conditional:
                for layer, value in enumerate(_conditional_text_shifts(method, images, request, normalisation)):
                    text_sums[layer] += value
            count += images.shape[0]
    method.train(was_training)
    vis = [s / count if count else 0.0 for s in sums]
    if conditional:
        txt = [s / count if count else 0.0 for s in text_sums]
    return ShiftProfile(f"activation/{normalisation}", vis, txt, count)


def _conditional_text_shifts(
    method: PromptedCLIP, images: Tensor, request: ShiftRequest, normalisation: Normalisation
) -> list[float]:
    """Σ over ``images`` of each text block's s_l (mean over the class prompts) on that image's own prompts
    (CoCoOp: the context plus the meta-net's bias from the image's feature, as `PromptedCLIP.forward`)."""
    raw = method.clip.forward_image(images).features
    adapted = method.image_adapter(raw) if method.image_adapter is not None else raw
    features = F.normalize(adapted, dim=-1)
    n_seq = method.tokens.shape[0]
    totals = [0.0] * method.clip.cfg.text.layers
    for feature in features:
        ctx = method.text.layer_prompts(feature[None])[0].repeat_interleave(n_seq, dim=0)
        shifts = activation_shifts(method.clip.forward_text(method.tokens, [ctx], request).shifts, normalisation)
        for layer, value in shifts.items():
            totals[layer] += float(value)
    return totals
