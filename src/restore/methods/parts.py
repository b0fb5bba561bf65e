"""The reusable parts methods are composed of: text contexts, deep prompts, the MaPLe coupling, CoCoOp's
meta-net, and the frozen teacher that regularising methods compare against."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from restore.clip.model import CLIP
from restore.clip.templates import resolve
from restore.clip.text_classifier import EnsembleMode, class_text_features
from restore.clip.tokenizer import encode, tokenize
from restore.errors import ConfigError
from restore.methods.base import TextPart, VisionPart


def fit_depth(depth: int, layers: int) -> int:
    """Prompt depth on this backbone: paper depths (9 of 12) are capped at a small model's layer count."""
    if depth < 1:
        raise ConfigError(f"prompt depth must be at least 1, got {depth}")
    return min(depth, layers)


def _deep(n_layers: int, n_ctx: int, width: int, std: float) -> nn.ParameterList:
    """Fresh prompt tokens per layer, N(0, std^2) as VPT, MaPLe and IVLP initialise them."""
    return nn.ParameterList([nn.Parameter(torch.randn(n_ctx, width) * std) for _ in range(n_layers)])


class HandcraftedText(TextPart):
    """Fixed sentences (zero-shot CLIP, VPT's text side); several templates form an ensemble."""

    def __init__(self, templates: Sequence[str], spec: str | None = None) -> None:
        """``spec`` (e.g. ``single``, ``ensemble``) re-resolves the templates when the dataset changes."""
        super().__init__()
        if not templates:
            raise ConfigError("a hand-crafted text part needs at least one template")
        self.templates = tuple(templates)
        self.spec = spec

    def use_dataset(self, dataset: str | None) -> None:
        if self.spec is not None:
            self.templates = resolve(self.spec, dataset)


class ContextText(TextPart):
    """Learnable context tokens right after the start token (CoOp), optionally deep (IVLP, MaPLe, PromptSRC).

    With ``init`` (e.g. "a photo of a"), the sentence is ``"{init} {class}."`` and its first ``n_ctx`` word
    tokens become learnable, initialised from their embeddings — the MaPLe/PromptSRC/KgCoOp recipe (with
    n_ctx = all of init's tokens, CoOp's). Without, the sentence is ``"X X ... X {class}."`` and the context
    is drawn from N(0, 0.02^2). ``depth`` > 1 adds fresh tokens at blocks 1..depth-1 (N(0, 0.02^2)).
    ``class_specific`` gives each class its own context (CoOp's CSC); it only serves its training classes.
    """

    def __init__(
        self,
        clip: CLIP,
        n_ctx: int,
        init: str | None = None,
        *,
        depth: int = 1,
        deep_std: float = 0.02,
        class_specific: bool = False,
        n_classes: int = 0,
    ) -> None:
        super().__init__()
        width = clip.cfg.text.width
        if n_ctx < 1:
            raise ConfigError(f"n_ctx must be at least 1, got {n_ctx}")
        depth = fit_depth(depth, clip.cfg.text.layers)
        if init:
            init = init.replace("_", " ").strip()
            n_words = len(encode(init))
            if n_ctx > n_words:
                raise ConfigError(
                    f"n_ctx={n_ctx} exceeds the {n_words} tokens of ctx_init {init!r}",
                    hint="lower n_ctx, lengthen ctx_init, or set ctx_init to null for random context",
                )
            with torch.no_grad():
                emb = clip.token_embedding(tokenize(init, clip.context_length).to(clip.positional_embedding.device))
            ctx = emb[0, 1 : 1 + n_ctx].detach().clone().float().cpu()
            if class_specific:
                ctx = ctx.unsqueeze(0).repeat(n_classes, 1, 1)
            prefix = init
        else:
            shape = (n_classes, n_ctx, width) if class_specific else (n_ctx, width)
            ctx = torch.randn(*shape) * 0.02
            prefix = " ".join(["X"] * n_ctx)
        self.n_ctx = n_ctx
        self.class_specific = class_specific
        # The class list a class-specific context belongs to: fixed by the first class set it serves.
        self.bound_classes: tuple[str, ...] | None = None
        self.ctx = nn.Parameter(ctx)
        self.deep = _deep(depth - 1, n_ctx, width, deep_std)
        self.templates = (prefix + " {}.",)

    def check_classes(self, classnames: Sequence[str]) -> None:
        if not self.class_specific:
            return
        hint = "use a shared context (class_specific: false) for base-to-novel or cross-dataset runs"
        if len(classnames) != self.ctx.shape[0]:
            raise ConfigError(
                f"class-specific contexts were learned for {self.ctx.shape[0]} classes; cannot serve "
                f"{len(classnames)} (class-specific context does not transfer to new classes)",
                hint=hint,
            )
        names = tuple(classnames)
        if self.bound_classes is None:
            self.bound_classes = names
        elif names != self.bound_classes:
            # Same count, other classes or another order: context i would silently serve the wrong class.
            changed = [f"{a!r} -> {b!r}" for a, b in zip(self.bound_classes, names, strict=True) if a != b]
            raise ConfigError(
                f"class-specific contexts belong to their training classes in order; this class set differs "
                f"at {len(changed)} position(s): {', '.join(changed[:3])}",
                hint=hint,
            )

    def layer_prompts(self, image_features: Tensor | None = None) -> list[Tensor | None]:
        return [self.ctx, *self.deep]


class ConditionalContextText(ContextText):
    """CoCoOp: the context shifted per image by a meta-net of the image feature, ctx_i = ctx + π(x_i)."""

    conditional = True

    def __init__(self, clip: CLIP, n_ctx: int, init: str | None, reduction: int = 16) -> None:
        super().__init__(clip, n_ctx, init)
        d, w = clip.cfg.embed_dim, clip.cfg.text.width
        hidden = max(1, d // reduction)
        self.meta_net = nn.Sequential(nn.Linear(d, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, w))

    def layer_prompts(self, image_features: Tensor | None = None) -> list[Tensor | None]:
        if image_features is None:
            raise ValueError("CoCoOp's context needs the image features")
        bias = self.meta_net(image_features.to(self.ctx.dtype))  # (B, W)
        return [self.ctx.unsqueeze(0) + bias.unsqueeze(1)]


class DeepVisionPrompts(VisionPart):
    """Independent learnable tokens appended to the image sequence at blocks 0..depth-1 (VPT-deep, IVLP)."""

    def __init__(self, clip: CLIP, n_ctx: int, depth: int, std: float = 0.02) -> None:
        super().__init__()
        if n_ctx < 1:
            raise ConfigError(f"vision prompts need n_ctx >= 1, got {n_ctx}")
        self.prompts = _deep(fit_depth(depth, clip.cfg.vision.layers), n_ctx, clip.cfg.vision.width, std)

    def layer_prompts(self, text_prompts: Sequence[Tensor | None]) -> list[Tensor | None]:
        return list(self.prompts)


class CoupledVisionPrompts(VisionPart):
    """MaPLe's coupling: the vision tokens of each prompted layer are a linear map (text width -> vision
    width) of that layer's text tokens; one map per layer, the deep ones cloned from one initialisation."""

    def __init__(self, clip: CLIP, depth: int) -> None:
        super().__init__()
        tw, vw = clip.cfg.text.width, clip.cfg.vision.width
        depth = fit_depth(depth, min(clip.cfg.text.layers, clip.cfg.vision.layers))
        self.proj = nn.Linear(tw, vw)
        single = nn.Linear(tw, vw)
        self.deep_proj = nn.ModuleList([copy.deepcopy(single) for _ in range(depth - 1)])

    def layer_prompts(self, text_prompts: Sequence[Tensor | None]) -> list[Tensor | None]:
        if len(text_prompts) < 1 + len(self.deep_proj):
            raise ValueError("the coupling needs a text prompt at every prompted layer")
        out: list[Tensor | None] = [self.proj(text_prompts[0])]
        out += [proj(t) for proj, t in zip(self.deep_proj, text_prompts[1:], strict=False)]
        return out


class FrozenTeacher:
    """Zero-shot text features of the frozen CLIP for the current classes, computed once per class set.

    Not a module: it holds no learnable state and its cache must never enter a checkpoint.
    """

    def __init__(self, templates: Sequence[str], mode: EnsembleMode = "normalized_mean") -> None:
        self.templates = tuple(templates)
        self.mode: EnsembleMode = mode
        self._key: tuple[str, ...] | None = None
        self._features: Tensor | None = None

    def text_features(self, clip: CLIP, classnames: Sequence[str]) -> Tensor:
        key = tuple(classnames)
        device = next(clip.parameters()).device
        if self._key != key or self._features is None or self._features.device != device:
            self._features = class_text_features(clip, classnames, self.templates, mode=self.mode)
            self._key = key
        return self._features

    @staticmethod
    @torch.no_grad()
    def image_features(clip: CLIP, images: Tensor) -> Tensor:
        return torch.nn.functional.normalize(clip.encode_image(images).float(), dim=-1)
