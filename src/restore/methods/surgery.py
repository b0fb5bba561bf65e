"""RESTORE's "surgery" adapters on the final image and text features (paper Eq. 11; docs/fidelity.md).

    x ← x + α · W_down · act(W_up · LN(x))        (512 → 2048 → 512 in the released code)

α follows one of four rules: the three rows of the paper's Table 5 and the released code's.
- ``none``: no adapter at all;
- ``fixed``: α is the configured ratio (the released run script's ``vis_r`` / ``text_r``);
- ``guided`` (our reading of the paper): α_v = γ Σ_l s_l^v (α_t = β Σ_l s_l^t), computed from the current
  shifts without gradient and smoothed by an exponential moving average during training; evaluation uses the
  final α, so inference runs no prompt-free pass. When γ (β) is not given it is calibrated at the first step
  so that α starts at the configured ratio — the released code initialises the ratio from those values;
- ``released`` (the authors' code, ``update_calib`` in ``maple_fsa.py``): α stays at the configured ratio, and
  once, after epoch ⌊E/3⌋ (counting from 0, i.e. after the (⌊E/3⌋+1)-th epoch), becomes
  ``ratio + c · mean_l ‖P_lᵀ P_l‖_F`` over the deep prompts of its modality, with c = 0.005 for vision and
  0.02 for text (absolute Gram norms, not relative to the first step).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from restore.clip.model import QuickGELU

Activation = Literal["relu", "quickgelu"]
Mode = Literal["guided", "fixed", "released", "none"]

# The released α update: per-modality coefficient of the mean absolute Gram norm (`update_calib`).
RELEASED_COEF = {"vision": 0.005, "text": 0.02}


def released_update_epoch(total_epochs: int) -> int:
    """The 1-based epoch after which the released rule updates α: its loop runs ``update_calib`` when the
    0-based epoch equals ``max_epoch // 3``."""
    return total_epochs // 3 + 1


class SurgeryAdapter(nn.Module):
    def __init__(
        self, dim: int, ratio: float, *, hidden_mult: int = 4, activation: Activation = "relu", zero_init: bool = False
    ) -> None:
        super().__init__()
        self.ln = nn.LayerNorm(dim)
        self.up = nn.Linear(dim, hidden_mult * dim)
        self.act: nn.Module = nn.ReLU() if activation == "relu" else QuickGELU()
        self.down = nn.Linear(hidden_mult * dim, dim)
        if zero_init:  # starts as the identity; an option, not the released default
            nn.init.zeros_(self.down.weight)
            nn.init.zeros_(self.down.bias)
        # α and the guidance scale are state, not parameters: no gradient ever reaches them.
        self.register_buffer("alpha", torch.tensor(float(ratio)))
        self.register_buffer("scale", torch.tensor(float("nan")))  # γ or β; NaN until calibrated

    def forward(self, x: Tensor) -> Tensor:
        return x + self.alpha.to(x.dtype) * self.down(self.act(self.up(self.ln(x))))

    @torch.no_grad()
    def set_alpha(self, value: float) -> None:
        self.alpha = torch.tensor(float(value), dtype=self.alpha.dtype, device=self.alpha.device)

    @torch.no_grad()
    def guide(self, total_shift: Tensor, ratio: float, momentum: float, scale: float | None) -> None:
        """One training step of FS guidance: α ← m·α + (1−m)·scale·Σ_l s_l."""
        total = total_shift.detach().float().to(self.alpha.device)
        if torch.isnan(self.scale) and scale is None and float(total) <= 0:
            # Nothing to calibrate against yet (LoRA starts with B = 0, so no shift): α stays at the ratio and
            # calibrates at the first step with a shift. Prompts shift from the first step, as before.
            return
        if torch.isnan(self.scale):
            fixed = scale if scale is not None else ratio / float(total)  # total > 0: returned above
            self.scale.fill_(fixed)
        target = self.scale * total
        # A new tensor, not an in-place update: this step's graph still holds the α it used.
        self.alpha = (momentum * self.alpha + (1.0 - momentum) * target).detach()
