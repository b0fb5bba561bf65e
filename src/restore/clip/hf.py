"""Hugging Face ``CLIPModel`` folders: read ``config.json`` and rename the weights to OpenAI's layout.

transformers is not needed: the config is plain JSON and the conversion is a renaming plus two changes of
form (separate q/k/v projections fused into ``in_proj``; projection matrices stored transposed).
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from restore.clip.architectures import ARCHITECTURES, CLIPConfig, TextConfig, VisionConfig
from restore.errors import CheckpointError

# transformers' defaults for fields an older config.json leaves out (CLIPTextConfig / CLIPVisionConfig).
TEXT_DEFAULTS: dict[str, Any] = {
    "vocab_size": 49408,
    "hidden_size": 512,
    "intermediate_size": 2048,
    "num_hidden_layers": 12,
    "num_attention_heads": 8,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
}
VISION_DEFAULTS: dict[str, Any] = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "num_channels": 3,
    "image_size": 224,
    "patch_size": 32,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
}
ACTIVATIONS = {"quick_gelu": True, "gelu": False}

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


def read_config(folder: Path) -> dict[str, Any] | None:
    """The folder's config.json when it describes a CLIP model; None when there is none."""
    path = folder / "config.json"
    if not path.is_file():
        return None
    try:
        cfg = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not valid JSON ({e})", hint="fetch it again") from None
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{path} is not a Hugging Face config (not a JSON object)")
    model_type = cfg.get("model_type")
    architectures = cfg.get("architectures") or []
    if model_type != "clip" and "CLIPModel" not in architectures:
        raise CheckpointError(
            f"{path} describes a {model_type or architectures or 'unknown'} model, not a CLIP model",
            hint="only Hugging Face CLIPModel folders (model_type 'clip') can be loaded",
        )
    return cfg


def weight_files(folder: Path) -> list[Path]:
    """The weight file(s) of an HF folder: one file, or the shards an index names; [] when there are none."""
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return [folder / name]
    for name in INDEX_FILES:
        index = folder / name
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (OSError, ValueError, KeyError, TypeError) as e:
                raise CheckpointError(f"{index} is not a valid shard index ({e!r})") from None
            shards = sorted({folder / f for f in weight_map.values()})
            missing = [s.name for s in shards if not s.is_file()]
            if missing:
                raise CheckpointError(
                    f"{folder} lacks shard(s) {', '.join(missing)} named in {name}",
                    hint="download the missing shard files into the same folder",
                )
            return shards
    return []


def _section(cfg: dict[str, Any], which: str, defaults: dict[str, Any]) -> dict[str, Any]:
    # transformers' own precedence: defaults, then ``<which>_config``, then the legacy ``<which>_config_dict``.
    merged = dict(defaults)
    for key in (f"{which}_config", f"{which}_config_dict"):
        part = cfg.get(key)
        if isinstance(part, dict):
            merged.update({k: v for k, v in part.items() if v is not None})
    return merged


def to_clip_config(cfg: dict[str, Any], source: Path) -> CLIPConfig:
    """Our CLIPConfig for an HF CLIP config; named after the known architecture it equals, if any."""
    t = _section(cfg, "text", TEXT_DEFAULTS)
    v = _section(cfg, "vision", VISION_DEFAULTS)
    acts = {t["hidden_act"], v["hidden_act"]}
    unsupported = acts - set(ACTIVATIONS)
    if unsupported or len(acts) > 1:
        raise CheckpointError(
            f"{source}: activation {t['hidden_act']!r} (text) / {v['hidden_act']!r} (vision) is not supported",
            hint="both towers must use 'quick_gelu' or 'gelu'",
        )
    for part, name in ((t, "text"), (v, "vision")):
        if abs(float(part["layer_norm_eps"]) - 1e-5) > 1e-12:
            raise CheckpointError(f"{source}: {name} layer_norm_eps {part['layer_norm_eps']} is not supported (1e-5)")
    if int(v.get("num_channels", 3)) != 3:
        raise CheckpointError(f"{source}: {v['num_channels']} input channels are not supported (RGB only)")
    vision = VisionConfig(
        image_size=int(v["image_size"]),
        patch_size=int(v["patch_size"]),
        width=int(v["hidden_size"]),
        layers=int(v["num_hidden_layers"]),
        heads=int(v["num_attention_heads"]),
        mlp_ratio=int(v["intermediate_size"]) / int(v["hidden_size"]),
    )
    text = TextConfig(
        context_length=int(t["max_position_embeddings"]),
        vocab_size=int(t["vocab_size"]),
        width=int(t["hidden_size"]),
        layers=int(t["num_hidden_layers"]),
        heads=int(t["num_attention_heads"]),
        mlp_ratio=int(t["intermediate_size"]) / int(t["hidden_size"]),
    )
    embed_dim = int(cfg.get("projection_dim") or 512)
    quick_gelu = ACTIVATIONS[t["hidden_act"]]
    for name, known in ARCHITECTURES.items():
        if known.vision == vision and known.text == text and known.embed_dim == embed_dim:
            return replace(known, name=name, quick_gelu=quick_gelu)
    return CLIPConfig("custom", embed_dim, vision, text, quick_gelu)


_RENAMES: list[tuple[str, str]] = [
    (r"^text_model\.embeddings\.token_embedding\.weight$", "token_embedding.weight"),
    (r"^text_model\.embeddings\.position_embedding\.weight$", "positional_embedding"),
    (r"^text_model\.final_layer_norm\.", "ln_final."),
    (r"^text_model\.encoder\.layers\.(\d+)\.", r"transformer.resblocks.\1."),
    (r"^vision_model\.embeddings\.class_embedding$", "visual.class_embedding"),
    (r"^vision_model\.embeddings\.patch_embedding\.weight$", "visual.conv1.weight"),
    (r"^vision_model\.embeddings\.position_embedding\.weight$", "visual.positional_embedding"),
    (r"^vision_model\.pre_layrnorm\.", "visual.ln_pre."),
    (r"^vision_model\.post_layernorm\.", "visual.ln_post."),
    (r"^vision_model\.encoder\.layers\.(\d+)\.", r"visual.transformer.resblocks.\1."),
]
_BLOCK_RENAMES = {
    "layer_norm1.": "ln_1.",
    "layer_norm2.": "ln_2.",
    "mlp.fc1.": "mlp.c_fc.",
    "mlp.fc2.": "mlp.c_proj.",
    "self_attn.out_proj.": "attn.out_proj.",
}
_QKV = re.compile(r"^(.*)\.self_attn\.([qkv])_proj\.(weight|bias)$")


def looks_like_hf(keys: list[str] | set[str]) -> bool:
    return any(k.startswith(("text_model.", "vision_model.")) for k in keys)


def convert_state_dict(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """HF CLIPModel weights under OpenAI's names. Unknown keys pass through unchanged (and are then reported
    as unexpected by the loader), so nothing is dropped silently except the ``position_ids`` index buffers."""
    out: dict[str, Tensor] = {}
    qkv: dict[str, dict[str, dict[str, Tensor]]] = {}
    for key, value in state.items():
        if key.endswith("embeddings.position_ids"):
            continue
        if key == "visual_projection.weight":
            out["visual.proj"] = value.t().contiguous()
            continue
        if key == "text_projection.weight":
            out["text_projection"] = value.t().contiguous()
            continue
        new = key
        for pattern, repl in _RENAMES:
            new, n = re.subn(pattern, repl, new)
            if n:
                break
        m = _QKV.match(new)
        if m:
            qkv.setdefault(m.group(1), {}).setdefault(m.group(3), {})[m.group(2)] = value
            continue
        for old, repl in _BLOCK_RENAMES.items():
            if f".{old}" in new and ".resblocks." in new:
                new = new.replace(f".{old}", f".{repl}")
                break
        out[new] = value
    for prefix, kinds in qkv.items():
        for kind, parts in kinds.items():
            if set(parts) != {"q", "k", "v"}:
                missing = sorted({"q", "k", "v"} - set(parts))
                raise CheckpointError(f"attention weights of {prefix} lack the {'/'.join(missing)} projection {kind}")
            name = "in_proj_weight" if kind == "weight" else "in_proj_bias"
            out[f"{prefix}.attn.{name}"] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    return out
