"""The world's tiny CLIP: our own CLIP class at a small size, with an embedding table for the world's words.

Token ids stay the real tokenizer's (so the end-of-text rule and every method's prompt code are unchanged);
only the embedding is compact: a row per BPE id the world uses, row 0 for any other id.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from restore.clip.architectures import CLIPConfig, TextConfig, VisionConfig
from restore.clip.model import CLIP
from restore.clip.tokenizer import encode, eot_id, sot_id
from restore.world import lexicon

VOCAB_SIZE = 49408


@lru_cache(maxsize=1)
def world_vocabulary() -> tuple[int, ...]:
    """Sorted BPE ids of every word the world's captions, class names and method templates use."""
    ids = {sot_id(), eot_id()}
    for text in lexicon.all_words():
        ids.update(encode(text))
    return tuple(sorted(ids))


@dataclass(frozen=True)
class ModelSize:
    """The knobs that set the tiny CLIP's cost; a pretraining config carries one."""

    image_size: int = 48
    patch_size: int = 8
    vision_width: int = 128
    vision_layers: int = 4
    text_width: int = 128
    text_layers: int = 3
    embed_dim: int = 128
    context_length: int = 32
    head_width: int = 32
    compact_embedding: bool = True

    def clip_config(self) -> CLIPConfig:
        rows = len(world_vocabulary()) + 1 if self.compact_embedding else None
        vision = VisionConfig(
            self.image_size,
            self.patch_size,
            self.vision_width,
            self.vision_layers,
            self.vision_width // self.head_width,
        )
        text = TextConfig(
            self.context_length,
            VOCAB_SIZE,
            self.text_width,
            self.text_layers,
            self.text_width // self.head_width,
            embedding_rows=rows,
        )
        return CLIPConfig("world", self.embed_dim, vision, text, quick_gelu=False)


def build_world_clip(size: ModelSize) -> CLIP:
    """A randomly initialised world CLIP (use the torch seed to make it reproducible)."""
    model = CLIP(size.clip_config())
    if size.compact_embedding:
        model.token_embedding.set_vocabulary(world_vocabulary())
    return model
