"""Load CLIP weights from any of the forms they are released in, as our ``CLIP`` (fp32, eval mode).

Accepted, without code changes: OpenAI's TorchScript archives; state dicts with OpenAI/open_clip key names
(``.pt``/``.pth``/``.bin``/``.safetensors``, bare or wrapped as open_clip training checkpoints are);
Hugging Face ``CLIPModel`` folders; our own safetensors files with the config in their metadata; and known
names (``ViT-B/16``, ``ViT-B-16``, ``openai/clip-vit-base-patch16``...) found in or downloaded to the cache.

The format is told by the file's first bytes, not its suffix. Pickles are only ever read with
``torch.load(weights_only=True)``; TorchScript (which ``torch.jit.load`` runs as TorchScript, not Python) is
accepted only for files laid out as TorchScript archives.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import struct
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor

from restore.clip import hf
from restore.clip.architectures import CLIPConfig, canonical_name, get_config, infer_config
from restore.clip.cache import describe_known, fetch, sources
from restore.clip.model import CLIP, build_model
from restore.errors import CheckpointError, ConfigError

logger = logging.getLogger(__name__)

CONFIG_KEY = "restore_clip_config"
# Scalars OpenAI's TorchScript models carry in their state dicts; their presence marks OpenAI's weights.
OPENAI_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")
# Buffers that are no weights (open_clip's causal mask shows up in traced exports).
IGNORED_KEYS = ("attn_mask", "visual.attn_mask")
WRAPPER_KEYS = ("state_dict", "model")
PREFIXES = ("module.", "_orig_mod.")
WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")
OPEN_CLIP_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
OPEN_CLIP_CONFIG = "open_clip_config.json"


@dataclass
class Checkpoint:
    """Weights in OpenAI's layout and what the source says about them."""

    state: dict[str, Tensor]
    source: Path
    config: CLIPConfig | None = None  # given by the file (ours, HF); else inferred from the weights
    quick_gelu: bool | None = None  # what the source says; None when it says nothing
    evidence: str = ""  # where ``quick_gelu`` came from, for messages


# --- entry points -------------------------------------------------------------------------------------------


def load(
    name_or_path: str | os.PathLike[str],
    device: str | torch.device = "cpu",
    *,
    quick_gelu: bool | None = None,
    arch: str | None = None,
    progress: bool = True,
) -> CLIP:
    """Our CLIP, fp32 and in eval mode, from a checkpoint file or folder or a known name.

    ``quick_gelu`` overrides the activation the source implies. ``arch`` (e.g. ``"ViT-B/16"``) requires the
    weights to be that architecture; a known name implies its own.
    """
    path = Path(name_or_path).expanduser()
    if path.exists():
        ckpt = read_checkpoint(path)
    else:
        name = str(name_or_path)
        if sources(name) is None:
            raise _unknown(name)
        src = fetch(name, progress=progress)
        ckpt = read_checkpoint(src.path)
        arch = arch or src.arch
    return build_from(ckpt, quick_gelu=quick_gelu, arch=arch).to(device).eval()


def save_clip(model: CLIP, path: str | os.PathLike[str], metadata: dict[str, str] | None = None) -> Path:
    """Write ``model`` as safetensors with its config in the metadata (``load`` reads it back exactly);
    ``metadata`` adds string entries (e.g. how the weights were made)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    tmp = path.with_name(path.name + ".tmp")
    meta = {**(metadata or {}), CONFIG_KEY: json.dumps(model.cfg.to_dict()), "format": "pt"}
    save_file(state, str(tmp), metadata=meta)
    os.replace(tmp, path)
    return path


def build_from(ckpt: Checkpoint, *, quick_gelu: bool | None = None, arch: str | None = None) -> CLIP:
    """Our model holding ``ckpt``'s weights: architecture checked, keys and shapes checked."""
    state = ckpt.state
    cfg = ckpt.config
    if cfg is None:
        try:
            cfg = infer_config(state)
        except ConfigError as e:
            sample = ", ".join(list(state)[:5])
            raise CheckpointError(
                f"{ckpt.source} is not a CLIP ViT checkpoint in the OpenAI/open_clip layout: {e.message}",
                hint=f"its first keys are: {sample}",
            ) from None
    if quick_gelu is None:
        quick_gelu = ckpt.quick_gelu
    if quick_gelu is None:
        quick_gelu = False
        logger.warning(
            "%s says nothing about its activation (no OpenAI keys, no %s beside it): assuming open_clip's "
            "default GELU; pass quick_gelu=True if these are OpenAI-trained weights",
            ckpt.source,
            OPEN_CLIP_CONFIG,
        )
    cfg = cfg.with_quick_gelu(quick_gelu)
    if arch is not None:
        want = get_config(arch)
        if not _same_architecture(cfg, want):
            raise CheckpointError(
                f"{ckpt.source} holds {_describe(cfg)}, not the requested {want.name}",
                hint=f"use a {want.name} checkpoint, or load this one without asking for {want.name}",
            )
    # Built without memory or random initialisation, then given the checkpoint's tensors themselves.
    with torch.device("meta"):
        model = build_model(cfg)
    _check_keys(model, state, ckpt.source)
    model.load_state_dict(state, strict=True, assign=True)
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    assert not left, f"tensors not in the state dict stayed uninitialised: {left[:5]}"
    return model.eval()


def read_checkpoint(path: Path) -> Checkpoint:
    """The weights at ``path`` (a file or a folder) in OpenAI's layout, fp32, with what the source says."""
    path = Path(path)
    ckpt = _read_folder(path) if path.is_dir() else _read_file(path)
    ckpt.state = {k: (v.float() if v.is_floating_point() else v) for k, v in ckpt.state.items()}
    return ckpt


# --- reading ------------------------------------------------------------------------------------------------


def _read_folder(folder: Path) -> Checkpoint:
    # open_clip's files first: a Hub folder of open_clip weights may also hold another library's config.json.
    for name in OPEN_CLIP_FILES:
        if (folder / name).is_file():
            return _read_file(folder / name)
    cfg = hf.read_config(folder)
    if cfg is not None:
        files = hf.weight_files(folder)
        if not files:
            raise CheckpointError(
                f"{folder} has a Hugging Face config.json but no weights "
                f"({' or '.join(hf.WEIGHT_FILES)}, or shards with an index)",
                hint=f"download the weights file into {folder}",
            )
        state: dict[str, Tensor] = {}
        for f in files:
            state.update(_tensors(f)[0])
        return _hf_checkpoint(state, cfg, folder)
    found = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    if len(found) == 1:
        return _read_file(found[0])
    if found:
        raise CheckpointError(
            f"{folder} holds several weight files: {', '.join(p.name for p in found)}",
            hint="pass the path of the one to load",
        )
    contents = ", ".join(sorted(p.name for p in folder.iterdir())[:8]) or "nothing"
    raise CheckpointError(
        f"{folder} contains no CLIP weights (it holds {contents})",
        hint="point at a checkpoint file, an open_clip folder or a Hugging Face CLIPModel folder "
        "(config.json + model.safetensors or pytorch_model.bin)",
    )


def _read_file(path: Path) -> Checkpoint:
    if not path.is_file():
        raise CheckpointError(f"{path} is not a file")
    kind = _sniff(path)
    metadata: dict[str, str] = {}
    if kind == "torchscript":
        return _read_torchscript(path)
    if kind == "safetensors":
        raw, metadata = _tensors(path)
        obj: Any = raw
    elif kind in ("zip", "pickle"):
        obj = _torch_load(path)
    else:
        raise _not_a_checkpoint(path, kind)
    state = _unwrap(obj, path)
    if CONFIG_KEY in metadata:
        cfg = _config_from_metadata(metadata[CONFIG_KEY], path)
        return Checkpoint(state, path, cfg, cfg.quick_gelu, "its stored config")
    if hf.looks_like_hf(state):
        cfg_json = hf.read_config(path.parent)
        if cfg_json is None:
            raise CheckpointError(
                f"{path} holds Hugging Face CLIPModel weights but there is no config.json beside it",
                hint="put the model's config.json in the same folder (or load the whole folder)",
            )
        return _hf_checkpoint(state, cfg_json, path)
    return _openai_layout(state, path)


def _sniff(path: Path) -> str:
    """'torchscript', 'zip' (torch.save), 'safetensors', 'pickle' (legacy torch.save), 'empty' or 'unknown'."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(16)
    if not head:
        return "empty"
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        try:
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
        except (zipfile.BadZipFile, OSError):
            return "damaged-zip"
        inner = [n.split("/", 1)[1] for n in names if "/" in n]
        if any(n == "constants.pkl" or n.startswith("code/") for n in inner):
            return "torchscript"
        return "zip" if "data.pkl" in inner else "unknown"  # any other zip is no torch.save file
    if len(head) >= 9:
        (n,) = struct.unpack("<Q", head[:8])
        if head[8:9] == b"{" and n > 0:
            return "safetensors" if 8 + n <= size else "damaged-safetensors"
    if head[:1] == b"\x80":
        return "pickle"
    return "unknown"


def _not_a_checkpoint(path: Path, kind: str) -> CheckpointError:
    size = path.stat().st_size
    if kind == "empty":
        return CheckpointError(f"{path} is empty", hint="the download or copy did not finish; fetch it again")
    if kind.startswith("damaged"):
        return CheckpointError(
            f"{path} is truncated or damaged ({size} bytes; its {kind.split('-')[1]} index is missing or cut)",
            hint="the download or copy did not finish; fetch the file again",
        )
    return CheckpointError(
        f"{path} is not a checkpoint: not a PyTorch, TorchScript or safetensors file",
        hint="give a .pt/.pth/.bin/.safetensors checkpoint, or a Hugging Face CLIPModel folder",
    )


def _damaged(path: Path, e: BaseException) -> CheckpointError:
    return CheckpointError(
        f"{path} is truncated or damaged and cannot be read ({type(e).__name__}: {str(e)[:200]})",
        hint="the download or copy did not finish or the file is corrupt; fetch it again",
    )


def _torch_load(path: Path) -> Any:
    try:
        # No mmap: the tensors become the model's parameters, which must not depend on the file staying put.
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights only" in str(e).lower() or "weights_only" in str(e):
            raise CheckpointError(
                f"{path} contains pickled Python objects besides tensors; they are not loaded, since unpickling "
                "them could run code",
                hint="re-save only the state dict: torch.save(checkpoint['state_dict'], 'weights.pt')",
            ) from None
        raise _damaged(path, e) from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as e:
        raise _damaged(path, e) from None


def _tensors(path: Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    """A safetensors file's tensors and metadata (or a torch.save file's tensors, for HF .bin weights)."""
    kind = _sniff(path)
    if kind != "safetensors":
        if kind not in ("zip", "pickle"):
            raise _not_a_checkpoint(path, kind)
        return _unwrap(_torch_load(path), path), {}

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            # Cloned: safetensors maps the file, and a parameter must not fault when the file is rewritten.
            return {k: f.get_tensor(k).clone() for k in f.keys()}, metadata  # noqa: SIM118 (not a dict)
    except (SafetensorError, OSError, ValueError) as e:
        raise _damaged(path, e) from None


def _read_torchscript(path: Path) -> Checkpoint:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated; OpenAI's files are TorchScript
            module = torch.jit.load(str(path), map_location="cpu")
        state = {k: v.detach() for k, v in module.state_dict().items()}
    except (RuntimeError, OSError, ValueError) as e:
        raise _damaged(path, e) from None
    return _openai_layout(state, path, torchscript=True)


def _unwrap(obj: Any, path: Path) -> dict[str, Tensor]:
    """The state dict inside ``obj``: bare, or under 'state_dict'/'model' with DDP/compile prefixes."""
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state dict", hint="save model.state_dict()")
    for key in WRAPPER_KEYS:
        inner = obj.get(key)
        if isinstance(inner, dict) and inner and all(isinstance(v, Tensor) for v in inner.values()):
            obj = inner
            break
    bad = [k for k, v in obj.items() if not isinstance(v, Tensor)]
    if bad:
        raise CheckpointError(
            f"{path} is not a state dict: entries {', '.join(map(repr, bad[:5]))} are not tensors",
            hint="a training checkpoint should keep its weights under 'state_dict'",
        )
    state: dict[str, Tensor] = {}
    for key, value in obj.items():
        for prefix in PREFIXES:
            while key.startswith(prefix):
                key = key[len(prefix) :]
        state[key] = value
    return state


def _openai_layout(state: dict[str, Tensor], path: Path, torchscript: bool = False) -> Checkpoint:
    extras = [k for k in OPENAI_EXTRA_KEYS if k in state]
    state = {k: v for k, v in state.items() if k not in OPENAI_EXTRA_KEYS and k not in IGNORED_KEYS}
    if torchscript:
        return Checkpoint(state, path, None, True, "an OpenAI TorchScript archive")
    if extras:
        return Checkpoint(state, path, None, True, f"OpenAI's keys ({', '.join(extras)})")
    sidecar = path.parent / OPEN_CLIP_CONFIG
    if sidecar.is_file():
        try:
            model_cfg = json.loads(sidecar.read_text()).get("model_cfg", {})
        except (OSError, ValueError, AttributeError) as e:
            raise CheckpointError(f"{sidecar} is not a valid open_clip config ({e})") from None
        return Checkpoint(state, path, None, bool(model_cfg.get("quick_gelu", False)), str(sidecar))
    return Checkpoint(state, path)


def _hf_checkpoint(state: dict[str, Tensor], cfg_json: dict[str, Any], source: Path) -> Checkpoint:
    cfg = hf.to_clip_config(cfg_json, source)
    return Checkpoint(hf.convert_state_dict(state), source, cfg, cfg.quick_gelu, "config.json's hidden_act")


def _config_from_metadata(text: str, path: Path) -> CLIPConfig:
    try:
        return CLIPConfig.from_dict(json.loads(text))
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path}: the CLIP config in its metadata is invalid ({e!r})") from None


# --- checks -------------------------------------------------------------------------------------------------


def _same_architecture(cfg: CLIPConfig, want: CLIPConfig) -> bool:
    return cfg.vision == want.vision and cfg.text == want.text and cfg.embed_dim == want.embed_dim


def _describe(cfg: CLIPConfig) -> str:
    v, t = cfg.vision, cfg.text
    shape = (
        f"vision {v.layers}x{v.width} patch {v.patch_size} at {v.image_size}px, text {t.layers}x{t.width}, "
        f"embed {cfg.embed_dim}"
    )
    return f"a {cfg.name} ({shape})" if cfg.name != "custom" else f"a CLIP of another architecture ({shape})"


def _first(items: list[str], n: int = 5) -> str:
    more = f" and {len(items) - n} more" if len(items) > n else ""
    return ", ".join(items[:n]) + more


def _check_keys(model: CLIP, state: dict[str, Tensor], source: Path) -> None:
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} key(s): {_first(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s): {_first(unexpected)}")
    wrong = [
        f"{k} {tuple(state[k].shape)} (expected {tuple(v.shape)})"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if wrong:
        problems.append(f"{len(wrong)} tensor(s) of the wrong shape: {_first(wrong, 3)}")
    if problems:
        raise CheckpointError(
            f"{source} does not fit a {model.cfg.name} CLIP: {'; '.join(problems)}",
            hint="the file is from another model or was saved with other parameter names",
        )


def _unknown(name: str) -> CheckpointError:
    canon = canonical_name(name)
    if canon is not None:
        return CheckpointError(
            f"{name!r} is an architecture without released weights, and no file or folder of that name exists",
            hint=f"released models: {describe_known()}; or build a random one with build_model(get_config(...))",
        )
    return CheckpointError(
        f"{name!r} is neither an existing file or folder nor a known CLIP model",
        hint=f"known names: {describe_known()}; otherwise give the path of a checkpoint file or folder",
    )
