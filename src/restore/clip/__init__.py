"""The frozen CLIP backbone: architectures, model with prompt hooks, tokenizer, checkpoint loading."""

from restore.clip.config import ARCHITECTURES, CLIPConfig, TextConfig, VisionConfig, get_config

# The function ``load`` shadows the submodule of the same name on the package (import that as a module via
# sys.modules["restore.clip.load"]).
from restore.clip.load import load, save_clip
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
