"""Fixtures of the world tests: a tiny world-CLIP size that trains in seconds."""

from __future__ import annotations

import pytest

from restore.world.world_clip import ModelSize


@pytest.fixture
def tiny_size() -> ModelSize:
    return ModelSize(
        image_size=48,
        patch_size=16,
        vision_width=32,
        vision_layers=1,
        text_width=32,
        text_layers=1,
        embed_dim=32,
        head_width=16,
    )
