"""Architectures of the CLIP backbone, named as OpenAI names them (``ViT-B/16``) with open_clip aliases."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from restore.errors import ConfigError


@dataclass(frozen=True)
class VisionConfig:
    image_size: int = 224
    patch_size: int = 16
    width: int = 768
    layers: int = 12
    heads: int = 12
    mlp_ratio: float = 4.0

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    @property
    def tokens(self) -> int:
        """CLS plus patches: the non-prompt tokens of the image tower."""
        return self.grid**2 + 1


@dataclass(frozen=True)
class TextConfig:
    context_length: int = 77
    vocab_size: int = 49408
    width: int = 512
    layers: int = 12
    heads: int = 8
    mlp_ratio: float = 4.0
    # When set, the token embedding holds only this many rows and a lookup from BPE id to row (a model that
    # knows a small world's words); ids stay the real tokenizer's, so the end-of-text rule still holds.
    embedding_rows: int | None = None


@dataclass(frozen=True)
class CLIPConfig:
    name: str
    embed_dim: int
    vision: VisionConfig
    text: TextConfig
    # OpenAI's released weights were trained with QuickGELU; open_clip's own trainings use exact GELU.
    quick_gelu: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CLIPConfig:
        return cls(
            name=d["name"],
            embed_dim=int(d["embed_dim"]),
            vision=VisionConfig(**d["vision"]),
            text=TextConfig(**d["text"]),
            quick_gelu=bool(d.get("quick_gelu", True)),
        )

    def with_quick_gelu(self, quick_gelu: bool) -> CLIPConfig:
        return replace(self, quick_gelu=quick_gelu)


ARCHITECTURES: dict[str, CLIPConfig] = {
    "ViT-B/32": CLIPConfig("ViT-B/32", 512, VisionConfig(224, 32, 768, 12, 12), TextConfig(77, 49408, 512, 12, 8)),
    "ViT-B/16": CLIPConfig("ViT-B/16", 512, VisionConfig(224, 16, 768, 12, 12), TextConfig(77, 49408, 512, 12, 8)),
    "ViT-L/14": CLIPConfig("ViT-L/14", 768, VisionConfig(224, 14, 1024, 24, 16), TextConfig(77, 49408, 768, 12, 12)),
    # For tests: every code path of the big models, in milliseconds. The real vocabulary is kept so the
    # real tokenizer works unchanged.
    "tiny": CLIPConfig("tiny", 32, VisionConfig(32, 8, 64, 3, 2), TextConfig(77, 49408, 32, 3, 2)),
}

ALIASES: dict[str, str] = {
    "ViT-B-32": "ViT-B/32",
    "ViT-B-16": "ViT-B/16",
    "ViT-L-14": "ViT-L/14",
    "openai/clip-vit-base-patch32": "ViT-B/32",
    "openai/clip-vit-base-patch16": "ViT-B/16",
    "openai/clip-vit-large-patch14": "ViT-L/14",
}


def canonical_name(name: str) -> str | None:
    """The OpenAI-style architecture name for ``name``, or None when it names no known architecture."""
    if name in ARCHITECTURES:
        return name
    return ALIASES.get(name)


def get_config(name: str) -> CLIPConfig:
    canon = canonical_name(name)
    if canon is None:
        known = ", ".join(sorted(set(ARCHITECTURES) | set(ALIASES)))
        raise ConfigError(f"unknown CLIP architecture {name!r}", hint=f"known architectures: {known}")
    return ARCHITECTURES[canon]


def infer_config(state: dict[str, Any], quick_gelu: bool = True) -> CLIPConfig:
    """Read the architecture off an OpenAI-layout state dict (the way OpenAI's ``build_model`` does)."""
    try:
        vision_width = state["visual.conv1.weight"].shape[0]
        patch = state["visual.conv1.weight"].shape[-1]
        vision_layers = len({k.split(".")[3] for k in state if k.startswith("visual.transformer.resblocks.")})
        grid = round((state["visual.positional_embedding"].shape[0] - 1) ** 0.5)
        embed_dim = state["text_projection"].shape[1]
        context_length = state["positional_embedding"].shape[0]
        rows = state["token_embedding.weight"].shape[0]
        compact = "token_embedding.lookup" in state
        vocab_size = state["token_embedding.lookup"].shape[0] if compact else rows
        text_width = state["ln_final.weight"].shape[0]
        text_layers = len({k.split(".")[2] for k in state if k.startswith("transformer.resblocks.")})
        vision_mlp = state["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0] / vision_width
        text_mlp = state["transformer.resblocks.0.mlp.c_fc.weight"].shape[0] / text_width
    except KeyError as e:
        raise ConfigError(f"state dict lacks {e.args[0]!r}: not a ViT CLIP in the OpenAI layout") from None
    vision = VisionConfig(grid * patch, patch, vision_width, vision_layers, max(1, vision_width // 64), vision_mlp)
    text = TextConfig(
        context_length,
        vocab_size,
        text_width,
        text_layers,
        max(1, text_width // 64),
        text_mlp,
        embedding_rows=rows if compact else None,
    )
    # Head counts are not visible in the weights: take them from a known architecture of the same shapes
    # (OpenAI's rule, width // 64, for anything else).
    for arch_name, cfg in ARCHITECTURES.items():
        same_vision = replace(cfg.vision, heads=vision.heads) == vision
        same_text = replace(cfg.text, heads=text.heads) == text
        if same_vision and same_text and cfg.embed_dim == embed_dim:
            return replace(cfg, quick_gelu=quick_gelu, name=arch_name)
    return CLIPConfig("custom", embed_dim, vision, text, quick_gelu)
