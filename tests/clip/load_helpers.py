"""Reference models and checkpoint writers for the loading tests: open_clip and transformers are the oracles."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F
from torch import Tensor

from restore.clip import CLIP, tokenize

TINY_OPEN_CLIP = dict(
    embed_dim=32,
    vision_cfg=dict(image_size=32, patch_size=8, width=64, layers=3, head_width=32),
    text_cfg=dict(context_length=77, vocab_size=49408, width=32, heads=2, layers=3),
)
TEXTS = ["a photo of a cat.", "a blurry diagram of a very small red house", "x"]


def perturb_(model: torch.nn.Module, seed: int, scale: float = 0.02) -> torch.nn.Module:
    """Move every parameter off its initial value (zero biases, unit norms would hide mapping mistakes) and
    round to fp16-representable values, so an fp16 copy is exact."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
            p.copy_(p.half().float())
    return model.eval()


def open_clip_tiny(quick_gelu: bool, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return perturb_(open_clip.model.CLIP(**TINY_OPEN_CLIP, quick_gelu=quick_gelu), seed)


def open_clip_b16(quick_gelu: bool, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return perturb_(open_clip.create_model("ViT-B-16", pretrained=None, force_quick_gelu=quick_gelu), seed)


def inputs(image_size: int, n_images: int = 2, seed: int = 1) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n_images, 3, image_size, image_size, generator=g), tokenize(TEXTS)


def logits(img: Tensor, txt: Tensor, logit_scale: Tensor) -> Tensor:
    return logit_scale.exp() * F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).t()


@torch.no_grad()
def open_clip_outputs(model: torch.nn.Module, images: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    img, txt = model.encode_image(images), model.encode_text(tokens)
    return img, txt, logits(img, txt, model.logit_scale)


@torch.no_grad()
def hf_outputs(model: torch.nn.Module, images: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    img = model.get_image_features(pixel_values=images)
    txt = model.get_text_features(input_ids=tokens)
    img = getattr(img, "pooler_output", img)  # transformers 5 returns an output object
    txt = getattr(txt, "pooler_output", txt)
    return img, txt, logits(img, txt, model.logit_scale)


def rel_err(a: Tensor, ref: Tensor) -> float:
    return float((a - ref).abs().max() / ref.abs().max())


@torch.no_grad()
def assert_parity(ours: CLIP, ref: tuple[Tensor, Tensor, Tensor], images: Tensor, tokens: Tensor, tol=1e-5) -> None:
    assert not ours.training
    assert all(p.dtype == torch.float32 for p in ours.parameters())
    img, txt = ours.encode_image(images), ours.encode_text(tokens)
    got = (img, txt, ours.logits(img, txt))
    for what, a, b in zip(("image features", "text features", "logits"), got, ref, strict=True):
        assert a.shape == b.shape, what
        err = rel_err(a, b)
        assert err < tol, f"{what}: max abs diff / max abs = {err:.2e}"


def openai_keys(vision_layers: int, text_layers: int) -> set[str]:
    """The key names of OpenAI's released ViT state dicts (as listed in OpenAI's clip/model.py build_model)."""
    block = [
        "attn.in_proj_weight",
        "attn.in_proj_bias",
        "attn.out_proj.weight",
        "attn.out_proj.bias",
        "ln_1.weight",
        "ln_1.bias",
        "mlp.c_fc.weight",
        "mlp.c_fc.bias",
        "mlp.c_proj.weight",
        "mlp.c_proj.bias",
        "ln_2.weight",
        "ln_2.bias",
    ]
    keys = {
        "positional_embedding",
        "text_projection",
        "logit_scale",
        "input_resolution",
        "context_length",
        "vocab_size",
        "token_embedding.weight",
        "ln_final.weight",
        "ln_final.bias",
        "visual.class_embedding",
        "visual.positional_embedding",
        "visual.proj",
        "visual.conv1.weight",
        "visual.ln_pre.weight",
        "visual.ln_pre.bias",
        "visual.ln_post.weight",
        "visual.ln_post.bias",
    }
    keys |= {f"visual.transformer.resblocks.{i}.{k}" for i in range(vision_layers) for k in block}
    keys |= {f"transformer.resblocks.{i}.{k}" for i in range(text_layers) for k in block}
    return keys


@torch.no_grad()
def save_openai_torchscript(model: torch.nn.Module, path: Path, image_size: int) -> dict[str, Tensor]:
    """Trace ``model`` into a TorchScript archive laid out like OpenAI's (fp16, their extra scalars, no mask
    buffer) and return the archive's state dict."""
    m = copy.deepcopy(model).eval()
    for name, value in (("input_resolution", image_size), ("context_length", 77), ("vocab_size", 49408)):
        if hasattr(m, name):
            delattr(m, name)
        m.register_buffer(name, torch.tensor(value))
    mask = m.attn_mask
    del m._buffers["attn_mask"]
    m.attn_mask = mask  # a plain attribute, as in OpenAI's model: a constant of the trace, not a state entry
    images, tokens = inputs(image_size, n_images=1)
    traced = torch.jit.trace(m, (images, tokens[:1]), check_trace=False)
    traced = traced.half()
    torch.jit.save(traced, str(path))
    return dict(traced.state_dict())


def save_open_clip_formats(
    model: torch.nn.Module,
    folder: Path,
    quick_gelu_sidecar: bool | None,
    formats: tuple[str, ...] = ("bin", "safetensors", "wrapped"),
) -> dict[str, Path]:
    """open_clip's ways of storing weights: .bin, .safetensors, a DDP-wrapped training checkpoint."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    paths = {"bin": folder / "open_clip_pytorch_model.bin", "safetensors": folder / "model.safetensors"}
    if "bin" in formats:
        torch.save(state, paths["bin"])
    if "safetensors" in formats:
        save_file(state, str(paths["safetensors"]))
    paths = {k: v for k, v in paths.items() if k in formats}
    if quick_gelu_sidecar is not None:
        cfg = {"model_cfg": {"embed_dim": 0, "quick_gelu": quick_gelu_sidecar}, "preprocess_cfg": {}}
        (folder / "open_clip_config.json").write_text(json.dumps(cfg))
    if "wrapped" not in formats:
        return paths
    wrapped = folder / "train" / "epoch_3.pt"
    wrapped.parent.mkdir()
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=1e-3)
    torch.save(
        {
            "epoch": 3,
            "name": "run",
            "state_dict": {f"module.{k}": v for k, v in state.items()},
            "optimizer": opt.state_dict(),
        },
        wrapped,
    )
    paths["wrapped"] = wrapped
    return paths


def hf_model(kind: str, act: str = "quick_gelu", seed: int = 0) -> torch.nn.Module:
    """A random transformers CLIPModel. Its own initialisation is skipped (slow at ViT-B/16 size, and it
    leaves biases at zero, which would hide mapping mistakes): every tensor is drawn here instead."""
    from transformers import CLIPConfig, CLIPModel
    from transformers.initialization import no_init_weights

    if kind == "tiny":
        text = dict(hidden_size=32, intermediate_size=128, num_attention_heads=2, num_hidden_layers=3)
        vision = dict(hidden_size=64, intermediate_size=256, num_attention_heads=2, num_hidden_layers=3)
        vision |= dict(image_size=32, patch_size=8)
        dim = 32
    else:  # ViT-B/16
        text = dict(hidden_size=512, intermediate_size=2048, num_attention_heads=8, num_hidden_layers=12)
        vision = dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12)
        vision |= dict(image_size=224, patch_size=16)
        dim = 512
    cfg = CLIPConfig(
        text_config=dict(vocab_size=49408, max_position_embeddings=77, hidden_act=act, **text),
        vision_config=dict(hidden_act=act, **vision),
        projection_dim=dim,
    )
    with no_init_weights():
        model = CLIPModel(cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if name == "logit_scale":
                p.copy_(2.6592 + 0.05 * noise)
            elif "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.05 * noise)
            elif p.dim() >= 2:  # (out, in) matrices, embeddings, the patch convolution
                p.copy_(noise * (p[0].numel() ** -0.5))
            else:
                p.copy_(0.05 * noise)
    return model.eval()
