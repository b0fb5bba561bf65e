"""A method's checkpoint: only its learnable tensors (safetensors) plus the config that rebuilds it.

The frozen backbone is never written; the backbone's architecture is recorded so that loading onto
another architecture fails with a clear message instead of silently wrong logits.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save

from restore.clip.architectures import CLIPConfig
from restore.clip.model import CLIP
from restore.errors import CheckpointError
from restore.fileio import atomic_write
from restore.methods.base import PromptedCLIP, build_method, config_dict, make_config

FORMAT = "restore-method/1"


@dataclass
class MethodCheckpoint:
    method: str
    config: dict[str, Any]
    backbone: dict[str, Any]
    classnames: list[str]
    dataset: str | None
    state: dict[str, torch.Tensor]
    extra: dict[str, Any]


def save_method(method: PromptedCLIP, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write the method's learnable state atomically; returns the path."""
    meta = {
        "format": FORMAT,
        "method": method.name,
        "config": json.dumps(config_dict(method.config), default=str),
        "backbone": json.dumps(method.clip.cfg.to_dict()),
        # The training classes, whatever the model was last set to: a reloaded head knows which classes it serves.
        "classnames": json.dumps(list(method.base_classes) or method.classnames),
        "dataset": json.dumps(method.dataset),
        "extra": json.dumps(extra or {}, default=str),
    }
    # Half tensors (precision fp16) are widened: exact, and the file is the same whatever the run's precision;
    # loading copies each value back into the method's own dtype.
    state = {k: _widen(v.detach()).contiguous().cpu() for k, v in method.learnable_state_dict().items()}
    blob = save(state, metadata=meta)
    return atomic_write(path, lambda f: f.write(blob))


def _widen(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.float() if tensor.dtype in (torch.float16, torch.bfloat16) else tensor


def read_method(path: str | Path) -> MethodCheckpoint:
    """Read a checkpoint written by `save_method`, or fail with what is wrong with the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist", hint="pass the run's checkpoint (model.safetensors)")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(
            f"{path} is not a readable method checkpoint ({e}); it may be truncated or of another format",
            hint="use the model.safetensors of a finished run, or resume the run to rewrite it",
        ) from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is a safetensors file but not a restore method checkpoint (format {meta.get('format')!r})",
            hint="CLIP weights are loaded with --backbone; --checkpoint takes a run's model.safetensors",
        )
    try:
        return MethodCheckpoint(
            method=meta["method"],
            config=json.loads(meta["config"]),
            backbone=json.loads(meta["backbone"]),
            classnames=json.loads(meta["classnames"]),
            dataset=json.loads(meta["dataset"]),
            state=state,
            extra=json.loads(meta.get("extra", "{}")),
        )
    except (KeyError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: damaged checkpoint metadata ({e})") from None


def load_method(
    path: str | Path,
    clip: CLIP,
    classnames: list[str] | None = None,
    *,
    expect_method: str | None = None,
) -> PromptedCLIP:
    """Rebuild a trained method around ``clip`` for ``classnames`` (default: its training classes)."""
    ckpt = read_method(path)
    if expect_method is not None and ckpt.method != expect_method:
        raise CheckpointError(
            f"{path} holds a {ckpt.method!r} model, not {expect_method!r}",
            hint=f"evaluate it as method {ckpt.method!r}, or pass a checkpoint of {expect_method!r}",
        )
    saved = CLIPConfig.from_dict(ckpt.backbone)
    ours = clip.cfg
    if (saved.vision, saved.text, saved.embed_dim) != (ours.vision, ours.text, ours.embed_dim):
        raise CheckpointError(
            f"{path} was trained on backbone {saved.name} but the loaded backbone is {ours.name}",
            hint=f"load the {saved.name} CLIP weights with --backbone",
        )
    config = make_config(ckpt.method, ckpt.config)
    method = build_method(config, clip, ckpt.classnames, ckpt.dataset)
    method.load_learnable_state_dict(ckpt.state)
    if classnames is not None:
        method.set_classes(classnames)
    return method.eval()  # a reloaded method is for evaluation; training callers switch it back
