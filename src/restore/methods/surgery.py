"""RESTORE's "surgery" adapters on the final image and text features (paper Eq. 11, SPEC.md).

    x ← x + α · W_down · act(W_up · LN(x))        (512 → 2048 → 512 in the released code)

α is one of the three rows of the paper's Table 5:
- ``none``: no adapter at all;
- ``fixed``: α is the configured ratio (the released run script's ``vis_r`` / ``text_r``);
- ``guided``: α_v = γ Σ_l s_l^v (α_t = β Σ_l s_l^t), computed from the current shifts without gradient and
  smoothed by an exponential moving average during training; evaluation uses the final α, so inference
  runs no prompt-free pass. When γ (β) is not given it is calibrated at the first step so that α starts at
  the configured ratio — the released code initialises the ratio from those per-dataset values.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from restore.clip.model import QuickGELU

Activation = Literal["relu", "quickgelu"]
Mode = Literal["guided", "fixed", "none"]


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
    def guide(self, total_shift: Tensor, ratio: float, momentum: float, scale: float | None) -> None:
        """One training step of FS guidance: α ← m·α + (1−m)·scale·Σ_l s_l."""
        total = total_shift.detach().float().to(self.alpha.device)
        if torch.isnan(self.scale):
            fixed = scale if scale is not None else (ratio / float(total) if float(total) > 0 else 0.0)
            self.scale.fill_(fixed)
        target = self.scale * total
        # A new tensor, not an in-place update: this step's graph still holds the α it used.
        self.alpha = (momentum * self.alpha + (1.0 - momentum) * target).detach()
