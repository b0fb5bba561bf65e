"""MMRL (Guo & Gu, CVPR 2025): multi-modal representation learning.

A shared learnable representation space — ``n`` tokens of ``rep_dim`` channels — is projected, by one linear
map per layer and tower, into representation tokens that replace the previous ones at every block from
``rep_start`` on (1-based; the release's REP_LAYERS 6..12). In the text tower they sit right after the start
token, pushing the sentence back (no positional embedding; the feature is read at the shifted end-of-text
token); in the image tower beside the patches. The image yields two features: the class token through CLIP's
projection, and the mean of the representation tokens through a new learnable projection.

Training: α·CE(class-token logits) + (1 - α)·CE(representation logits) + λ·(1 - cos(image, frozen image))
+ λ·(1 - cos(text, frozen text)). Test: the training classes take α·class + (1 - α)·representation logits;
any other class set the class-token logits alone. Release: yunncheng/MMRL (trainers/mmrl.py,
clip/model_mmrl.py, trainers/config.py, configs/trainers/MMRL/*.yaml).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from restore.clip.model import CLIP, ShiftRequest, ShiftStats
from restore.clip.templates import resolve
from restore.errors import ConfigError
from restore.methods.base import LossTerm, MethodConfig, Output, PromptedCLIP, register
from restore.methods.heads import on_base_classes
from restore.methods.parts import FrozenTeacher, HandcraftedText
from restore.options import option

# trainers/config.py: REG_WEIGHT per dataset (MMRL, every task); EuroSAT also REP_DIM 2048.
REG_WEIGHTS: dict[str, float] = {
    "StanfordCars": 7.0,
    "FGVCAircraft": 6.0,
    "SUN397": 6.0,
    "DescribableTextures": 6.0,
    "Food101": 5.0,
    "OxfordFlowers": 4.0,
    "UCF101": 3.0,
    "ImageNet": 0.5,
    "Caltech101": 0.5,
    "OxfordPets": 0.2,
    "EuroSAT": 0.01,
}
REP_DIMS: dict[str, int] = {"EuroSAT": 2048}
# The yaml defaults where trainers/config.py names no value: vit_b16.yaml 1.0, vit_b16_few_shot.yaml 0.5; the
# cross-dataset script passes REG_WEIGHT 0.2 after the per-dataset table, so it wins for the ImageNet source.
REG_DEFAULT, REG_FEWSHOT, REG_CROSS_DATASET = 1.0, 0.5, 0.2
CROSS_DATASET_PROTOCOLS = ("xd", "dg")


class RepresentationSpace(nn.Module):
    """The shared tokens (N(0, 0.02²)) and their per-layer maps into each tower (cloned from one init each),
    plus the projection of the image representation tokens (``proj_rep``, width^-0.5·N(0, 1) as the release)."""

    def __init__(self, clip: CLIP, n_tokens: int, rep_dim: int, n_layers: int) -> None:
        super().__init__()
        vw, tw = clip.cfg.vision.width, clip.cfg.text.width
        self.tokens = nn.Parameter(torch.randn(n_tokens, rep_dim) * 0.02)
        to_vision, to_text = nn.Linear(rep_dim, vw), nn.Linear(rep_dim, tw)
        self.to_vision = nn.ModuleList([copy.deepcopy(to_vision) for _ in range(n_layers)])
        self.to_text = nn.ModuleList([copy.deepcopy(to_text) for _ in range(n_layers)])
        self.proj_rep = nn.Parameter(vw**-0.5 * torch.randn(vw, clip.cfg.embed_dim))

    def layer_tokens(self) -> tuple[list[Tensor], list[Tensor]]:
        """(text tokens, vision tokens) of each representation layer, (n, width) each."""
        return [m(self.tokens) for m in self.to_text], [m(self.tokens) for m in self.to_vision]


class RepresentationLoss(LossTerm):
    """(1 - α)·CE of the representation logits, and λ·(1 - mean cos) of the class-token image features and
    of the text features to the frozen CLIP's (trainers/mmrl.py ``MMRL_Loss``)."""

    def __init__(self, template: str, alpha: float, reg_weight: float) -> None:
        super().__init__()
        self.teacher = FrozenTeacher((template,))
        self.alpha, self.reg_weight = alpha, reg_weight

    def forward(self, method: PromptedCLIP, out: Output, labels: Tensor) -> dict[str, Tensor]:
        ref_text = self.teacher.text_features(method.clip, method.classnames).to(out.text_features.dtype)
        ref_image = FrozenTeacher.image_features(method.clip, out.images).to(out.image_features.dtype)
        cos_image = F.cosine_similarity(out.image_features, ref_image, dim=-1).mean()
        cos_text = F.cosine_similarity(out.text_features, ref_text, dim=-1).mean()
        return {
            "ce_rep": (1.0 - self.alpha) * F.cross_entropy(out.measured["logits_rep"], labels),
            "reg_image": self.reg_weight * (1.0 - cos_image),
            "reg_text": self.reg_weight * (1.0 - cos_text),
        }


def _layer_tokens(reps: list[Tensor], layer: int, start: int) -> Tensor | None:
    """Block ``layer``'s representation tokens: the release's layers start..start+len-1 (a deeper tower, e.g.
    ViT-L's 24 image blocks beside 12 text blocks, lets the last ones flow on as deep prompts do)."""
    return reps[layer - start] if start <= layer < start + len(reps) else None


class MMRLModel(PromptedCLIP):
    """Both towers run here, block by block over the frozen CLIP's blocks, with the representation tokens."""

    rep: RepresentationSpace
    rep_start: int  # 0-based index of the first block with representation tokens
    alpha: float

    def _image(self, images: Tensor, reps: list[Tensor], shift: ShiftRequest | None = None):
        """(class-token features, representation features, per-layer shifts) of the images."""
        v = self.clip.visual
        x = v.embed(images)
        n_real, n_rep = x.shape[1], self.rep.tokens.shape[0]
        shifts: list[ShiftStats | None] = []
        for layer in range(v.transformer.layers):
            p = _layer_tokens(reps, layer, self.rep_start)
            region = (n_real, n_real + n_rep) if p is not None else None
            measure = shift if p is not None else None
            sample = v.sample_tokens(n_real, measure, x.device) if measure is not None else None
            rows = None
            if v.transformer.pruned(layer, measure):  # the last block: only CLS and the tokens are read
                keep = torch.cat([torch.zeros(1, dtype=torch.long), torch.arange(n_real, n_real + n_rep)])
                rows = keep.to(x.device).expand(x.shape[0], -1)
            x, s = v.transformer.run_block(layer, x, prompts=p, region=region, shift=measure, sample=sample, rows=rows)
            shifts.append(s)
        tokens = x[:, 1:] if rows is not None else x[:, n_real:]
        cls = v.ln_post(x[:, 0]) @ v.proj
        rep = v.ln_post(tokens).mean(1) @ self.rep.proj_rep.to(x.dtype)
        return cls, rep, shifts

    def _text(self, tokens: Tensor, reps: list[Tensor], shift: ShiftRequest | None = None):
        """(features, per-layer shifts) of tokenised sentences, the representation tokens inserted after the
        start token at the first representation block (the feature is read ``n`` tokens later)."""
        clip = self.clip
        eot = tokens.argmax(dim=-1)
        tokens = tokens[:, : int(eot.max()) + 1]  # causal: nothing after the last end-of-text token is read
        x = clip.token_embedding(tokens).to(clip.dtype)
        x = x + clip.positional_embedding[: tokens.shape[1]].to(x.dtype)
        n_rep = self.rep.tokens.shape[0]
        shifts: list[ShiftStats | None] = []
        for layer in range(clip.transformer.layers):
            p = _layer_tokens(reps, layer, self.rep_start)
            if layer == self.rep_start:
                x = torch.cat([x[:, :1], p.to(x.dtype).expand(x.shape[0], -1, -1), x[:, 1:]], dim=1)
                eot = eot + n_rep
            region = (1, 1 + n_rep) if p is not None else None
            measure = shift if p is not None else None
            counted = None
            if measure is not None:
                counted = torch.arange(x.shape[1], device=x.device)[None, :] <= eot[:, None].to(x.device)
            rows = eot[:, None].to(x.device) if clip.transformer.pruned(layer, measure) else None
            x, s = clip.transformer.run_block(
                layer, x, causal=True, prompts=p, region=region, shift=measure, counted=counted, rows=rows
            )
            shifts.append(s)
        x = clip.ln_final(x)
        last = x[:, 0] if rows is not None else x[torch.arange(x.shape[0], device=x.device), eot.to(x.device)]
        return last @ clip.text_projection, shifts

    def _logits(self, cls: Tensor, rep: Tensor, text_features: Tensor) -> tuple[Tensor, Tensor]:
        scale = self.clip.logit_scale.exp()
        return (
            scale * F.normalize(cls, dim=-1) @ text_features.t(),
            scale * F.normalize(rep, dim=-1) @ text_features.t(),
        )

    def _test_logits(self, logits: Tensor, logits_rep: Tensor) -> Tensor:
        """The training classes: α·class-token + (1 - α)·representation logits; other classes: class-token."""
        if on_base_classes(self):
            return self.alpha * logits + (1.0 - self.alpha) * logits_rep
        return logits

    def forward(self, images: Tensor, shift: ShiftRequest | str | None = "auto") -> Output:
        if shift == "auto":
            shift = self.shift_request if self.training else None
        assert not isinstance(shift, str)
        reps_text, reps_vision = self.rep.layer_tokens()
        cls, rep, vshifts = self._image(images, reps_vision, shift)
        raw_text, tshifts = self._text(self.tokens, reps_text, shift)
        text_features = self._class_features(raw_text)
        image = self._adapt(self.image_adapter, cls)  # adapters (RESTORE's surgery) act on the class token
        logits, logits_rep = self._logits(image, rep, text_features)
        out = Output(
            logits if self.training else self._test_logits(logits, logits_rep),
            F.normalize(image, dim=-1), text_features, cls, raw_text, images,
            text_prompts=[None] * self.rep_start + list(reps_text),
            vision_prompts=[None] * self.rep_start + list(reps_vision),
            vision_shifts=vshifts, text_shifts=tshifts,
        )  # fmt: skip
        out.measured["logits_rep"] = logits_rep
        return out

    def tuned_towers(self) -> set[str]:
        """Both towers carry representation tokens (what RESTORE's regulariser needs)."""
        return {"vision", "text"} | self.prompted_towers()

    def text_shift_stats(self, request: ShiftRequest) -> list[ShiftStats | None]:
        """The in-block shift of the representation tokens in this method's own text tower (the profile's)."""
        reps_text, _ = self.rep.layer_tokens()
        return self._text(self.tokens, reps_text, request)[1]

    def image_shift_stats(self, images: Tensor, request: ShiftRequest) -> list[ShiftStats | None]:
        """The same in its own image tower."""
        _, reps_vision = self.rep.layer_tokens()
        return self._image(images, reps_vision, request)[2]

    @torch.no_grad()
    def class_features(self) -> Tensor | None:
        reps_text, _ = self.rep.layer_tokens()
        return self._class_features(self._text(self.tokens, reps_text)[0])

    @torch.no_grad()
    def predict(self, images: Tensor, class_features: Tensor | None = None) -> Tensor:
        if class_features is None:
            return self.forward(images, shift=None).logits
        _, reps_vision = self.rep.layer_tokens()
        cls, rep, _ = self._image(images, reps_vision)
        return self._test_logits(*self._logits(self._adapt(self.image_adapter, cls), rep, class_features))


@register("mmrl", "MMRL: shared representation tokens projected into both towers from layer 6; rep-token head (α=0.7)")
@dataclass
class MMRLConfig(MethodConfig):
    n_rep_tokens: int = option(5, help="representation tokens (N_REP_TOKENS 5)", min=1, max=64)
    rep_dim: int | None = option(None, help="representation space width (REP_DIM); null: 512, EuroSAT 2048", min=1)
    rep_start: int = option(
        6,
        help="first block (1-based) with representation tokens, to the last (REP_LAYERS 6..12); capped at the depth",
        min=1,
    )
    alpha: float = option(0.7, help="α: class-token share of loss and base logits (ALPHA 0.7)", min=0.0, max=1.0)
    reg_weight: float | None = option(
        None, help="λ of the alignment to frozen CLIP (REG_WEIGHT); null: per dataset (trainers/config.py)", min=0.0
    )
    templates: str = option("single", help="the hand-written template (CUSTOM_TEMPLATES per dataset): single or {}")

    def for_run(self, protocol: str | None, dataset: str | None) -> MMRLConfig:
        """λ and the width filled per dataset and protocol, as the release's scripts and tables set them."""
        reg, dim = self.reg_weight, self.rep_dim
        if reg is None:
            if protocol in CROSS_DATASET_PROTOCOLS:
                reg = REG_CROSS_DATASET
            else:
                reg = REG_WEIGHTS.get(dataset or "", REG_FEWSHOT if protocol == "fewshot" else REG_DEFAULT)
        if dim is None:
            dim = 512 if protocol in CROSS_DATASET_PROTOCOLS else REP_DIMS.get(dataset or "", 512)
        return dataclasses.replace(self, reg_weight=reg, rep_dim=dim)

    def build(self, clip: CLIP, *, dataset: str | None = None, n_classes: int = 0) -> PromptedCLIP:
        config = self.for_run(None, dataset)  # a no-op on a config the engine resolved
        assert config.reg_weight is not None and config.rep_dim is not None
        layers = min(clip.cfg.vision.layers, clip.cfg.text.layers)
        start = min(self.rep_start, layers)  # a small backbone keeps at least its last block, as fit_depth caps depths
        templates = resolve(self.templates, dataset)
        if len(templates) != 1:
            raise ConfigError(f"MMRL uses one template per dataset, not {len(templates)}", hint="templates: single")
        text = HandcraftedText(templates, spec=self.templates)
        loss = RepresentationLoss(templates[0], self.alpha, config.reg_weight)
        method = MMRLModel(clip, self, text=text, losses=[loss], dataset=dataset)
        method.rep = RepresentationSpace(clip, self.n_rep_tokens, config.rep_dim, layers - start + 1)
        method.rep_start = start - 1
        method.alpha = self.alpha
        method.ce_weight = self.alpha
        return method
