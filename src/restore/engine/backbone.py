"""The backbone setting of a run: a name, a path, ``random:<arch>`` or a registered provider (``world``).

`check_backbone` validates the setting without loading weights (a run validates everything before it
writes anything); `load_backbone` returns the frozen CLIP.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from restore import plugins
from restore.clip import CLIP, build_model, get_config, load
from restore.clip.architectures import ARCHITECTURES
from restore.clip.model import compile_blocks
from restore.errors import ConfigError

# Seed of the random weights behind ``random:<arch>``: fixed, so every run (and every seed of a run) shares
# one backbone, as they would share pretrained weights. The tests' `tiny_clip` fixture uses the same seed.
RANDOM_BACKBONE_SEED = 0

_PROVIDERS: dict[str, Callable[[], CLIP]] = {}
# Other providers (the synthetic world's, installed extensions') come from `restore.plugins`, imported on use.


def register_backbone(name: str, load: Callable[[], CLIP]) -> None:
    """Make ``name`` a backbone setting whose weights ``load()`` returns."""
    _PROVIDERS[name.lower()] = load


def _provider(name: str) -> Callable[[], CLIP] | None:
    key = name.lower()
    if key not in _PROVIDERS and key in plugins.backbone_names():
        try:
            load = plugins.backbone_loader(key)
        except ImportError:  # an installation without the module that provides it
            load = None
        if load is not None:
            _PROVIDERS[key] = load
    return _PROVIDERS.get(key)


def _known_names() -> str:
    return ", ".join(
        [
            *ARCHITECTURES,
            *(f"random:{a}" for a in ARCHITECTURES),
            *sorted(set(_PROVIDERS) | set(plugins.backbone_names())),
        ]
    )


def check_backbone(spec: str) -> None:
    """Raise ConfigError when ``spec`` cannot name a backbone (unknown architecture, missing file)."""
    spec = spec.strip()
    if not spec:
        raise ConfigError("model.backbone is empty", hint=f"use one of: {_known_names()}, or a checkpoint path")
    if spec.lower().startswith("random:"):
        get_config(spec.split(":", 1)[1])
        return
    if spec.lower() in _PROVIDERS or spec.lower() in plugins.backbone_names():
        if _provider(spec) is None:
            raise ConfigError(
                f"backbone {spec!r} is not available in this installation",
                hint="use an architecture name, random:<arch>, or the path of CLIP weights",
            )
        return
    if Path(spec).expanduser().exists():
        return
    try:
        get_config(spec)
    except ConfigError:
        suffixes = (".pt", ".pth", ".bin", ".safetensors")
        looks_like_path = spec.startswith((".", "/", "~")) or spec.endswith(suffixes)
        what = "file or folder does not exist" if looks_like_path else "is not a known architecture, file or folder"
        raise ConfigError(
            f"model.backbone {spec!r}: {what}",
            hint=f"use an architecture name or random:<arch> ({_known_names()}), or the path of CLIP weights",
        ) from None


def load_backbone(spec: str, device: torch.device | str = "cpu") -> CLIP:
    """The frozen CLIP named by ``spec``, in eval mode on ``device``."""
    check_backbone(spec)
    spec = spec.strip()
    if spec.lower().startswith("random:"):
        cfg = get_config(spec.split(":", 1)[1])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_BACKBONE_SEED)
            clip = build_model(cfg)
    elif (provider := _provider(spec)) is not None:
        clip = provider()
    else:
        clip = load(spec)
    return clip.to(device).eval().requires_grad_(False)


def backbone_label(spec: str, clip: CLIP) -> str:
    """How results name the backbone: the architecture (``ViT-B/16``), ``random-<arch>``, or the provider."""
    s = spec.strip().lower()
    if s.startswith("random:"):
        return f"random-{clip.cfg.name}"
    if s in _PROVIDERS:
        return clip.cfg.name if clip.cfg.name.lower().startswith(s) else f"{s}-{clip.cfg.name}"
    return clip.cfg.name


def apply_model_options(clip: CLIP, model: Any) -> CLIP:
    """The run's speed and memory switches (``model.text_packing`` ...) on a loaded backbone."""
    clip.text_packing = bool(model.text_packing)
    clip.text_chunk = int(model.text_chunk)
    clip.transformer.grad_checkpointing = bool(model.text_checkpointing)
    if model.compile:
        compile_blocks(clip)
    return clip
