"""Where the world CLIP's weights live. The file format is restore.clip.save_clip's own (safetensors with the
CLIPConfig in the metadata), so `restore.clip.load(path)` reads these weights like any other checkpoint."""

from __future__ import annotations

from pathlib import Path

from safetensors import safe_open

from restore.clip.checkpoint_loading import CONFIG_KEY, load, save_clip
from restore.clip.model import CLIP
from restore.errors import CheckpointError

__all__ = ["SHIPPED", "WEIGHTS_DIR", "load_clip", "load_world_clip", "read_metadata", "save_clip"]

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
SHIPPED = WEIGHTS_DIR / "world_clip.safetensors"


def read_metadata(path: Path | str) -> dict[str, str]:
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as e:  # safetensors raises several types for a damaged file
        raise CheckpointError(f"{path} is not a readable safetensors file: {e}") from e


def load_clip(path: Path | str) -> CLIP:
    """A world CLIP (or any CLIP saved by `save_clip`), in eval mode; refuses files without our config."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}", hint="run `restore world pretrain` to make one")
    if CONFIG_KEY not in read_metadata(path):
        raise CheckpointError(
            f"{path} carries no model config (metadata key {CONFIG_KEY!r})",
            hint="save world checkpoints with restore.world.weights.save_clip",
        )
    return load(path)


def load_world_clip() -> CLIP:
    """The pretrained world CLIP that ships with the package."""
    return load_clip(SHIPPED)
