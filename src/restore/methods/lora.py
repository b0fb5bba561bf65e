"""Low-rank adapters (LoRA) on the attention projections of CLIP's towers: the learnable part of CLIP-LoRA.

For a projection W of an adapted attention, the block computes ``W·h + scale · B·A·drop(h)`` (B: d×r, A: r×d),
that is ``(W + ΔW)·h`` with ΔW = scale·B·A when dropout is off (evaluation). A starts as nn.Linear's weights
(Kaiming-uniform, a = √5), B at zero, so the model starts as zero-shot CLIP exactly; ``scale = alpha / √r``
(MaxZanella/CLIP-LoRA: loralib/layers.py, `LoRALayer`; the LoRA paper's alpha / r is *not* what it uses).

The adapters belong to the method (its parameters, its checkpoint), never to the backbone: `LoRA.applied`
attaches them to the shared CLIP's attentions for the duration of one forward and takes them off after,
so any other method using the same CLIP object sees the frozen weights untouched.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from restore.clip.model import CLIP, Transformer
from restore.errors import ConfigError

TARGETS = ("q", "k", "v", "o")
TOWERS = ("vision", "text")

# CLIP-LoRA's named positions (loralib/utils.py INDEX_POSITIONS_*) for a 12-layer tower; "all" is every layer.
POSITIONS: dict[str, tuple[int, ...]] = {
    "all": tuple(range(12)),
    "bottom": (0, 1, 2, 3),
    "mid": (4, 5, 6, 7),
    "up": (8, 9, 10, 11),
    "half-up": (6, 7, 8, 9, 10, 11),
    "half-bottom": (0, 1, 2, 3, 4, 5),
    "top3": (9, 10, 11),
}


def layers_at(position: str, n_layers: int) -> list[int]:
    """The layers a named position adapts on a tower of ``n_layers`` (``all`` is every layer of any tower;
    the others are CLIP-LoRA's ViT-B indices, kept where they exist on a smaller model)."""
    if position not in POSITIONS:
        raise ConfigError(f"unknown LoRA position {position!r}", hint=f"one of {', '.join(POSITIONS)}")
    if position == "all":
        return list(range(n_layers))
    return [i for i in POSITIONS[position] if i < n_layers]


class LoRAAttention(nn.Module):
    """The adapters of one attention: an (A, B) pair per adapted projection among q, k, v, o.

    Each projection draws its own dropout mask of the input, as CLIP-LoRA's separate ``LinearLoRA`` layers do.
    Implements `restore.clip.model.AttentionDelta`.
    """

    def __init__(self, width: int, targets: Sequence[str], rank: int, scale: float, dropout: float) -> None:
        super().__init__()
        self.width, self.targets, self.scale = width, tuple(targets), scale
        self.A = nn.ParameterDict()
        self.B = nn.ParameterDict()
        for t in self.targets:
            a = torch.empty(rank, width)
            nn.init.kaiming_uniform_(a, a=math.sqrt(5))  # nn.Linear's default weight init, as loralib's
            self.A[t] = nn.Parameter(a)
            self.B[t] = nn.Parameter(torch.zeros(width, rank))
        self.dropout = nn.Dropout(dropout)

    def weight_delta(self, target: str) -> Tensor:
        """ΔW = scale · B A of one projection (d, d)."""
        return self.scale * self.B[target] @ self.A[target]

    def _term(self, h: Tensor, target: str) -> Tensor:
        a, b = self.A[target].to(h.dtype), self.B[target].to(h.dtype)
        return (self.dropout(h) @ a.t()) @ b.t() * self.scale

    def in_proj(self, h: Tensor, part: str) -> Tensor | None:
        letters = {"qkv": "qkv", "q": "q", "kv": "kv"}[part]
        if not any(t in self.targets for t in letters):
            return None
        zero = None
        pieces = []
        for t in letters:
            if t in self.targets:
                pieces.append(self._term(h, t))
            else:
                zero = zero if zero is not None else h.new_zeros(*h.shape[:-1], self.width)
                pieces.append(zero)
        return pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=-1)

    def out_proj(self, z: Tensor) -> Tensor | None:
        return self._term(z, "o") if "o" in self.targets else None


class LoRA(nn.Module):
    """The adapters of both towers, by tower and layer: ``vision.<layer>`` and ``text.<layer>``."""

    def __init__(
        self,
        clip: CLIP,
        *,
        towers: Sequence[str],
        position: str,
        targets: Sequence[str],
        rank: int,
        alpha: float,
        dropout: float,
    ) -> None:
        super().__init__()
        if rank < 1:
            raise ConfigError(f"LoRA rank must be at least 1, got {rank}")
        bad = [t for t in targets if t not in TARGETS] + [t for t in towers if t not in TOWERS]
        if bad or not targets or not towers:
            raise ConfigError(
                f"LoRA needs targets among {', '.join(TARGETS)} and towers among {', '.join(TOWERS)}; got "
                f"targets {list(targets)}, towers {list(towers)}",
                hint="e.g. targets: [q, k, v], towers: [vision, text]",
            )
        scale = alpha / math.sqrt(rank)
        self.vision = nn.ModuleDict()
        self.text = nn.ModuleDict()
        for name, tower, holder in (
            ("vision", clip.visual.transformer, self.vision),
            ("text", clip.transformer, self.text),
        ):
            if name in towers:
                for layer in layers_at(position, tower.layers):
                    holder[str(layer)] = LoRAAttention(tower.width, targets, rank, scale, dropout)

    def _pairs(self, clip: CLIP) -> Iterator[tuple[Transformer, int, LoRAAttention]]:
        for tower, holder in ((clip.visual.transformer, self.vision), (clip.transformer, self.text)):
            for layer, module in holder.items():
                yield tower, int(layer), module  # type: ignore[misc]

    @contextmanager
    def applied(self, clip: CLIP) -> Iterator[None]:
        """The adapters attached to ``clip``'s attentions inside the block, the frozen CLIP outside it.

        Re-entrant (a nested use leaves them attached to the outer one). Activation checkpointing would
        recompute the blocks in the backward pass, after the adapters are taken off: refused.
        """
        pairs = list(self._pairs(clip))
        if pairs and pairs[0][0].resblocks[pairs[0][1]].attn.delta is pairs[0][2]:
            yield
            return
        for tower, _, _ in pairs:
            if tower.grad_checkpointing and torch.is_grad_enabled():
                raise ConfigError(
                    "LoRA cannot train with activation checkpointing of the text tower",
                    hint="set model.text_checkpointing: false",
                )
        for tower, layer, module in pairs:
            attn = tower.resblocks[layer].attn
            if attn.delta is not None:
                raise RuntimeError("another method's weight delta is attached to this CLIP")
            attn.set_delta(module)
        try:
            yield
        finally:
            for tower, layer, _ in pairs:
                tower.resblocks[layer].attn.set_delta(None)

    def layers(self, tower: str) -> list[int]:
        return sorted(int(k) for k in (self.vision if tower == "vision" else self.text))
