"""The frozen CLIP backbone: architectures, model with prompt hooks, tokenizer, checkpoint loading."""

from restore.clip.architectures import ARCHITECTURES, CLIPConfig, TextConfig, VisionConfig, get_config
from restore.clip.checkpoint_loading import load, save_clip
from restore.clip.model import CLIP, ShiftRequest, ShiftStats, TowerOutput, build_model
from restore.clip.tokenizer import tokenize

__all__ = [
    "ARCHITECTURES",
    "CLIP",
    "CLIPConfig",
    "ShiftRequest",
    "ShiftStats",
    "TextConfig",
    "TowerOutput",
    "VisionConfig",
    "build_model",
    "get_config",
    "load",
    "save_clip",
    "tokenize",
]
