"""Feature shift and RESTORE's feature-shift consistency loss (paper Eq. 6-10; docs/fidelity.md).

Two measures of the per-layer shift magnitude ``s_l`` of each modality:
- ``activation`` (the paper): from the in-block shift Ω_l = Φ_l([X_l, P_l])[X] − Φ_l(X_l) that the backbone
  computes in the same block call; ``s_l = mean over samples of ‖Ω_l‖_F / sqrt(tokens counted)`` (``rms``),
  or divided by the RMS of Φ_l(X_l) (``relative``).
- ``parameter`` (the released code's proxy): ``s_l = ‖P_l P_lᵀ‖_F / ‖P_l⁽⁰⁾ P_l⁽⁰⁾ᵀ‖_F``, the Gram-matrix norm
  of the layer's prompt tokens relative to its value at the first step. (‖PᵀP‖_F = ‖PPᵀ‖_F, the small one.)
  Over the deep layers only (1..depth−1): the released ``maple_fsa.py`` compares the compound prompts and never
  layer 0 (the text context against its coupled vision prompts), so neither do we (docs/fidelity.md).

The loss is ``L_fs = Σ_l (s_l^v − s_l^t)²`` over the layers measured in both modalities.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from restore.clip.model import ShiftStats
from restore.distributed import batch_mean
from restore.methods.base import LossTerm, Output, PromptedCLIP

Measure = Literal["activation", "parameter"]
Normalisation = Literal["rms", "relative"]

VISION, TEXT = "vision", "text"


def _sqrt(x: Tensor) -> Tensor:
    """sqrt with a zero (not NaN) gradient at 0: a layer whose prompts are masked out has no shift."""
    positive = x > 0
    return torch.where(positive, torch.sqrt(torch.where(positive, x, torch.ones_like(x))), torch.zeros_like(x))


def activation_shifts(
    stats: Sequence[ShiftStats | None],
    normalisation: Normalisation = "rms",
    mean: Callable[[Tensor], Tensor] = torch.mean,
) -> dict[int, Tensor]:
    """s_l for every layer that measured a shift: the mean over samples of the per-sample magnitude.

    ``mean`` averages the per-sample values; training passes one that averages over the global batch of a
    distributed run (`restore.distributed.batch_mean`)."""
    out: dict[int, Tensor] = {}
    for layer, s in enumerate(stats):
        if s is None:
            continue
        if normalisation == "rms":
            per_sample = _sqrt(s.shift_ms)
        elif normalisation == "relative":
            per_sample = _sqrt(s.shift_ms / s.ref_ms.clamp_min(torch.finfo(s.ref_ms.dtype).tiny))
        else:
            raise ValueError(f"unknown normalisation {normalisation!r}")
        out[layer] = mean(per_sample)
    return out


def gram_norm(prompts: Tensor) -> Tensor:
    """‖P Pᵀ‖_F of a layer's prompt tokens (n, d); per-sample prompts (B, n, d) are averaged first."""
    p = prompts.float()
    if p.dim() == 3:
        p = p.mean(0)
    return torch.linalg.matrix_norm(p @ p.t(), ord="fro")


# The first layer the parameter proxy measures: the released code's loss and α rule see only the deep prompts.
FIRST_PROXY_LAYER = 1


def parameter_shifts(prompts: Sequence[Tensor | None], initial: Sequence[Tensor | None]) -> dict[int, Tensor]:
    """s_l of the released code's proxy for the deep layers (l >= 1) whose prompts exist in both lists."""
    return {
        layer: gram_norm(p) / gram_norm(p0).clamp_min(1e-12)
        for layer, (p, p0) in enumerate(zip(prompts, initial, strict=False))
        if layer >= FIRST_PROXY_LAYER and p is not None and p0 is not None
    }


def mean_gram_norm(prompts: Sequence[Tensor | None]) -> float:
    """Mean over the deep layers of the absolute ‖PᵀP‖_F: what the released α update reads (`update_calib`)."""
    deep = [p for layer, p in enumerate(prompts) if layer >= FIRST_PROXY_LAYER and p is not None]
    norms = [float(gram_norm(p.detach())) for p in deep]
    return sum(norms) / len(norms) if norms else 0.0


def consistency_loss(vision: dict[int, Tensor], text: dict[int, Tensor]) -> Tensor:
    """Σ_l (s_l^v − s_l^t)² over the layers both modalities prompt."""
    layers = sorted(set(vision) & set(text))
    if not layers:
        ref = next(iter(vision.values()), None) or next(iter(text.values()), None)
        return torch.zeros((), device=ref.device if ref is not None else None)
    return torch.stack([(vision[layer] - text[layer]) ** 2 for layer in layers]).sum()


class ShiftMeasure(nn.Module):
    """Measures (s^v, s^t) once per training step and caches them on the step's Output for the loss and
    the surgery ratios. For the parameter proxy it keeps the first-step prompts as buffers (they are part
    of the method's state, so a resumed run or a later analysis uses the same reference)."""

    def __init__(
        self,
        method: PromptedCLIP,
        measure: Measure = "activation",
        normalisation: Normalisation = "rms",
    ) -> None:
        super().__init__()
        self.measure = measure
        self.normalisation = normalisation
        self.n_text = self.n_vision = 0
        if measure == "parameter":
            with torch.no_grad():
                text = method.text.layer_prompts()
                vision = method.vision.layer_prompts(text) if method.vision is not None else []
            for kind, prompts in ((TEXT, text), (VISION, vision)):
                for i, p in enumerate(prompts):
                    self.register_buffer(f"{kind}_initial_{i}", p.detach().clone().float())
                setattr(self, f"n_{kind}", len(prompts))

    def initial(self, kind: str) -> list[Tensor | None]:
        return [getattr(self, f"{kind}_initial_{i}") for i in range(getattr(self, f"n_{kind}"))]

    def forward(self, out: Output) -> tuple[dict[int, Tensor], dict[int, Tensor]]:
        if "shift" in out.measured:
            return out.measured["shift"]
        if self.measure == "activation":
            # Images differ per rank in a distributed run: their mean shift is over the global batch (the
            # text side encodes the same class prompts on every rank).

            vision = activation_shifts(out.vision_shifts, self.normalisation, batch_mean)
            text = activation_shifts(out.text_shifts, self.normalisation)
        else:
            vision = parameter_shifts(out.vision_prompts, self.initial(VISION))
            text = parameter_shifts(out.text_prompts, self.initial(TEXT))
        out.measured["shift"] = (vision, text)
        with torch.no_grad():
            out.logs["shift_v"] = float(sum(v.detach() for v in vision.values())) if vision else 0.0
            out.logs["shift_t"] = float(sum(t.detach() for t in text.values())) if text else 0.0
        return vision, text


class FeatureShiftConsistency(LossTerm):
    """λ_fs · L_fs, with (s^v, s^t) from the method's ShiftMeasure."""

    def __init__(self, measure: ShiftMeasure, weight: float) -> None:
        super().__init__()
        self.measure = [measure]  # a reference, not a second registration of the same module
        self.weight = weight

    def forward(self, method: PromptedCLIP, out: Output, labels: Tensor) -> dict[str, Tensor]:
        vision, text = self.measure[0](out)
        return {"fs": self.weight * consistency_loss(vision, text)}
