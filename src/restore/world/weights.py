"""Saving and loading the world CLIP: safetensors with the CLIPConfig JSON under ``restore_clip_config``.

This is the convention of ``restore.clip.load.save_clip`` / ``load``; these two functions stand in for them
until that module lands, and are the only place the world touches the file format.
"""

from __future__ import annotations

import json
from pathlib import Path

from restore.clip.config import CLIPConfig
from restore.clip.model import CLIP
from restore.errors import CheckpointError

CONFIG_KEY = "restore_clip_config"
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
SHIPPED = WEIGHTS_DIR / "world_clip.safetensors"


def save_clip(model: CLIP, path: Path | str, metadata: dict[str, str] | None = None) -> Path:
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    meta = {CONFIG_KEY: json.dumps(model.cfg.to_dict()), **(metadata or {})}
    save_file(state, str(path), metadata=meta)
    return path


def read_metadata(path: Path | str) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def load_clip(path: Path | str) -> CLIP:
    """A CLIP from a safetensors file written by `save_clip`, in eval mode."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}", hint="run `restore world pretrain` to make one")
    try:
        meta = read_metadata(path)
        state = load_file(str(path))
    except Exception as e:  # safetensors raises several types for a damaged file
        raise CheckpointError(f"{path} is not a readable safetensors file: {e}") from e
    if CONFIG_KEY not in meta:
        raise CheckpointError(
            f"{path} carries no model config (metadata key {CONFIG_KEY!r})",
            hint="save world checkpoints with restore.world.weights.save_clip",
        )
    model = CLIP(CLIPConfig.from_dict(json.loads(meta[CONFIG_KEY])))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{path} does not match its config: missing {missing[:3]}, unexpected {unexpected[:3]}")
    return model.eval()


def load_world_clip() -> CLIP:
    """The pretrained world CLIP that ships with the package."""
    return load_clip(SHIPPED)
