"""A method is a composition of parts around one frozen CLIP, registered under a name with a typed config.

`PromptedCLIP` is the one model class every method uses: it asks its text part for this step's text
prompts, its (optional) vision part for the vision prompts, runs the two towers, applies the (optional)
adapters on the final features, and adds the extra loss terms. A method file declares its config
(defaults with the source of each) and its `build`, which picks the parts. Nothing is copied per method.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from restore import plugins
from restore.clip.model import CLIP, ShiftRequest, ShiftStats
from restore.clip.text_classifier import clean_classname
from restore.clip.tokenizer import tokenize
from restore.errors import CheckpointError, ConfigError
from restore.methods.schedules import describe_schedules
from restore.options import describe, from_dict

if TYPE_CHECKING:  # feature_shift builds on this module; the annotation only names its class
    from restore.methods.feature_shift import ShiftMeasure

# --- configs and the registry ---------------------------------------------------------------------------
# Prompt lengths checked when a method's config is read (before anything is allocated): a text prompt lives in
# the text encoder's 77-token context beside its start and end tokens; vision prompts are extra image tokens.
MAX_TEXT_PROMPT_TOKENS = 75
MAX_VISION_PROMPT_TOKENS = 1024


@dataclass
class MethodConfig:
    """Base of every method's config. Subclasses add their fields, each with the source of its default."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    # lr / epochs / batch size are not here: restore.methods.schedules holds them per schedule set.

    def build(self, clip: CLIP, *, dataset: str | None = None, n_classes: int = 0) -> PromptedCLIP:
        """The method's parts around ``clip``. ``dataset`` picks per-dataset defaults (templates, ratios)."""
        raise NotImplementedError

    def for_run(self, protocol: str | None, dataset: str | None) -> MethodConfig:
        """This config with the values it leaves open (null) filled for a run of ``protocol`` on ``dataset`` (a
        CoOp dataset name), so the run's resolved config says what ran. Most methods leave nothing open."""
        return self


_REGISTRY: dict[str, type[MethodConfig]] = {}


def register(name: str | type[MethodConfig], summary: str = "") -> Any:
    """Register a method config under its name: ``@register("coop", "CoOp: ...")`` above ``@dataclass``, or a
    bare ``@register`` on a class that sets ``name`` and ``summary`` itself (extensions written that way)."""

    def add(cls: type[MethodConfig]) -> type[MethodConfig]:
        if isinstance(name, str):
            cls.name, cls.summary = name, summary
        if not cls.name:
            raise ValueError(f"{cls.__name__} has no name")
        _REGISTRY[cls.name] = cls
        return cls

    return add(name) if isinstance(name, type) else add


def _load_extensions() -> None:
    """Methods of installed extensions (entry points, `restore.plugins`) register on the first look-up."""
    plugins.load_group(plugins.METHODS)


def method_names() -> list[str]:
    _load_extensions()
    return sorted(_REGISTRY)


def method_class(name: str) -> type[MethodConfig]:
    _load_extensions()
    key = name.strip().lower().replace("-", "_")
    if key not in _REGISTRY:
        raise ConfigError(f"unknown method {name!r}", hint=f"known methods: {', '.join(method_names())}")
    return _REGISTRY[key]


def make_config(name: str, values: dict[str, Any] | None = None) -> MethodConfig:
    """A method's config from its name and the values a run sets (unknown keys are an error)."""
    cls = method_class(name)
    return from_dict(cls, values or {}, where=f"method ({cls.name})")


def build_method(
    config: MethodConfig | str, clip: CLIP, classnames: Sequence[str], dataset: str | None = None
) -> PromptedCLIP:
    """A ready model: the method's parts around ``clip``, set up for ``classnames``."""
    if isinstance(config, str):
        config = make_config(config)
    method = config.build(clip, dataset=dataset, n_classes=len(classnames))
    method.base_classes = tuple(classnames)
    method.set_classes(classnames)
    return method


def method_table() -> list[dict[str, Any]]:
    """What `restore methods` prints: name, summary, schedule of each set and protocol, config fields."""
    return [
        {
            "name": cls.name,
            "summary": cls.summary,
            "schedules": describe_schedules(cls.name),
            "fields": describe(cls),
        }
        for cls in (_REGISTRY[n] for n in method_names())
    ]


# --- the parts' interfaces ------------------------------------------------------------------------------
class TextPart(nn.Module):
    """Makes the text tower's input for a class set: the sentence around each class name and the prompts.

    ``layer_prompts()[0]`` replaces token positions 1..n (the context after the start token); entries 1..
    are written over the same positions at the input of those blocks.
    """

    conditional: ClassVar[bool] = False  # True when the prompts depend on the image (CoCoOp)
    templates: tuple[str, ...] = ("{}",)  # sentences per class; more than one is an ensemble

    def sentences(self, classname: str) -> list[str]:
        return [t.format(clean_classname(classname)) for t in self.templates]

    def layer_prompts(self, image_features: Tensor | None = None) -> list[Tensor | None]:
        return []

    def check_classes(self, classnames: Sequence[str]) -> None:
        """Raise if this part cannot serve ``classnames`` (class-specific contexts)."""

    def use_dataset(self, dataset: str | None) -> None:
        """Follow a change of dataset (hand-written per-dataset templates); learned prompts ignore it."""


class VisionPart(nn.Module):
    def layer_prompts(self, text_prompts: Sequence[Tensor | None]) -> list[Tensor | None]:
        raise NotImplementedError


class LossTerm(nn.Module):
    """An extra loss of a method; returns its weighted components by name (added to the cross-entropy)."""

    def forward(self, method: PromptedCLIP, out: Output, labels: Tensor) -> dict[str, Tensor]:
        raise NotImplementedError


@dataclass
class Output:
    logits: Tensor  # (B, C)
    image_features: Tensor  # (B, D) unit norm, after the image adapter
    text_features: Tensor  # (C, D) or (B, C, D) when conditional; unit norm, after the text adapter
    raw_image_features: Tensor  # before adapter and normalisation
    raw_text_features: Tensor
    images: Tensor
    text_prompts: list[Tensor | None] = field(default_factory=list)
    vision_prompts: list[Tensor | None] = field(default_factory=list)
    vision_shifts: list[ShiftStats | None] = field(default_factory=list)
    text_shifts: list[ShiftStats | None] = field(default_factory=list)
    # Per-step values parts want logged (e.g. surgery ratios), as floats.
    logs: dict[str, float] = field(default_factory=dict)
    # Values one part derives and others reuse within the step (e.g. the measured per-layer shifts).
    measured: dict[str, Any] = field(default_factory=dict)


StepHook = Callable[["PromptedCLIP", Output], None]


# --- the model ------------------------------------------------------------------------------------------
class PromptedCLIP(nn.Module):
    """A frozen CLIP with a method's learnable parts. The backbone never enters a checkpoint."""

    def __init__(
        self,
        clip: CLIP,
        config: MethodConfig,
        *,
        text: TextPart,
        vision: VisionPart | None = None,
        losses: Sequence[LossTerm] = (),
        image_adapter: nn.Module | None = None,
        text_adapter: nn.Module | None = None,
        dataset: str | None = None,
    ) -> None:
        super().__init__()
        self.clip = clip.requires_grad_(False).eval()
        self.config = config
        self.dataset = dataset
        self.text = text
        self.vision = vision
        self.losses = nn.ModuleList(losses)
        self.image_adapter = image_adapter
        self.text_adapter = text_adapter
        # Set by parts that need the in-block feature shift during training (RESTORE).
        self.shift_request: ShiftRequest | None = None
        # RESTORE's measure of (s^v, s^t) per step, and the settings it ran with (the run's record and
        # `restore analyze` read them); None / empty for every method without the regulariser.
        self.shift_measure: ShiftMeasure | None = None
        self.restore_settings: dict[str, Any] = {}
        # Called after each training forward (e.g. to update a moving average); never at evaluation.
        self.step_hooks: list[StepHook] = []
        # Called at the end of each epoch with (epoch, total_epochs), epoch counting from 1 (e.g. PromptSRC's
        # prompt aggregation, which loads the average after epoch == total_epochs).
        self.epoch_hooks: list[Callable[[int, int], None]] = []
        # Processes images per chunk of this many when text depends on the image (memory).
        self.conditional_chunk = 1
        # Recompute each chunk's text pass in backward instead of keeping its activations: without it the
        # activations of all B x C image-conditioned prompts stay alive until backward, whatever the chunk.
        self.conditional_checkpoint = False
        self.classnames: list[str] = []
        # The classes the model was built for, i.e. trained on (build_method sets them, a checkpoint keeps them):
        # a head over these (DePT, MMRL) serves a test set only when it holds these classes (methods/heads.py).
        self.base_classes: tuple[str, ...] = ()
        # Weight of the cross-entropy on `Output.logits`: DePT and MMRL share it with their second head.
        self.ce_weight = 1.0
        self.register_buffer("tokens", torch.zeros(0, clip.context_length, dtype=torch.long), persistent=False)
        for p in self.learnable_parameters():
            p.requires_grad_(True)

    @property
    def name(self) -> str:
        return self.config.name

    def train(self, mode: bool = True) -> PromptedCLIP:
        super().train(mode)
        self.clip.eval()  # the frozen backbone has no train-time behaviour, keep it so
        return self

    # --- classes ----------------------------------------------------------------------------------------
    def set_classes(self, classnames: Sequence[str], dataset: str | None = None) -> None:
        """Tokenise the class prompts once; called for the training classes and again for each test set.

        ``dataset`` (a CoOp dataset name such as ``DescribableTextures``) switches per-dataset text, e.g. the
        zero-shot template, when a test set comes from another dataset (cross-dataset evaluation).
        """
        if dataset is not None and dataset != self.dataset:
            self.dataset = dataset
            self.text.use_dataset(dataset)
        self.text.check_classes(classnames)
        sentences = [s for c in classnames for s in self.text.sentences(c)]
        self.classnames = list(classnames)
        self.tokens = tokenize(sentences, self.clip.context_length).to(self.tokens.device)

    @property
    def n_templates(self) -> int:
        return len(self.text.templates)

    # --- learnable state --------------------------------------------------------------------------------
    def learnable_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.named_parameters() if not n.startswith("clip.")]

    def learnable_state_dict(self) -> dict[str, Tensor]:
        return {k: v.detach().clone() for k, v in self.state_dict().items() if not k.startswith("clip.")}

    def load_learnable_state_dict(self, state: dict[str, Tensor]) -> None:
        expected = {k: v for k, v in self.state_dict().items() if not k.startswith("clip.")}
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        wrong = sorted(k for k in set(expected) & set(state) if tuple(expected[k].shape) != tuple(state[k].shape))
        if missing or unexpected or wrong:
            parts = []
            if missing:
                parts.append(f"missing {missing[:5]}")
            if unexpected:
                parts.append(f"unexpected {unexpected[:5]}")
            if wrong:
                parts.append(
                    "shape mismatch "
                    + ", ".join(f"{k}: {tuple(state[k].shape)} vs {tuple(expected[k].shape)}" for k in wrong[:5])
                )
            raise CheckpointError(
                f"checkpoint does not fit method {self.name!r} on backbone {self.clip.cfg.name}: " + "; ".join(parts),
                hint="pass the checkpoint of a run of this method and backbone, or the method it was trained with",
            )
        self.load_state_dict({**{k: v for k, v in self.state_dict().items() if k.startswith("clip.")}, **state})

    def training_state(self) -> dict[str, Any]:
        """State beyond the learnable tensors that a resumed run needs (e.g. aggregation accumulators)."""
        return {}

    def load_training_state(self, state: dict[str, Any]) -> None:
        """Inverse of `training_state`."""

    # --- forward ----------------------------------------------------------------------------------------
    def _adapt(self, adapter: nn.Module | None, features: Tensor) -> Tensor:
        return adapter(features) if adapter is not None else features

    def _class_features(self, raw: Tensor) -> Tensor:
        """(S, D) raw text features of S = T*C sentences -> (C, D) unit class features (template ensemble)."""
        feats = F.normalize(self._adapt(self.text_adapter, raw), dim=-1)
        t = self.n_templates
        if t == 1:
            return feats
        return F.normalize(feats.view(-1, t, feats.shape[-1]).mean(1), dim=-1)

    def forward(self, images: Tensor, shift: ShiftRequest | str | None = "auto") -> Output:
        """``shift="auto"`` measures the feature shift when training needs it (RESTORE); diagnostics pass a
        ShiftRequest to measure it in evaluation too."""
        if shift == "auto":
            shift = self.shift_request if self.training else None
        assert not isinstance(shift, str)
        text_prompts = self.text.layer_prompts() if not self.text.conditional else []
        vision_prompts = self.vision.layer_prompts(text_prompts) if self.vision is not None else []
        img = self.clip.forward_image(images, vision_prompts, shift)
        raw_img = img.features
        image_features = F.normalize(self._adapt(self.image_adapter, raw_img), dim=-1)
        if self.text.conditional:
            return self._conditional_forward(images, raw_img, image_features, img.shifts)
        txt = self.clip.forward_text(self.tokens, text_prompts, shift)
        text_features = self._class_features(txt.features)
        logits = self.clip.logit_scale.exp() * image_features @ text_features.t()
        return Output(
            logits, image_features, text_features, raw_img, txt.features, images,
            text_prompts, vision_prompts, img.shifts, txt.shifts,
        )  # fmt: skip

    def _conditional_forward(self, images: Tensor, raw_img: Tensor, image_features: Tensor, vshifts) -> Output:
        """Text prompts conditioned on each image: B x C sentences, encoded a chunk of images at a time."""
        b = image_features.shape[0]
        n_seq = self.tokens.shape[0]
        feats, raws = [], []
        for start in range(0, b, self.conditional_chunk):
            chunk = image_features[start : start + self.conditional_chunk]
            ctx = self.text.layer_prompts(chunk)[0]  # (b', n, W)
            ctx = ctx.repeat_interleave(n_seq, dim=0)  # one copy per sentence
            tokens = self.tokens.repeat(chunk.shape[0], 1)
            if self.conditional_checkpoint and torch.is_grad_enabled():
                raw = checkpoint(self._encode_conditional, tokens, ctx, use_reentrant=False)
            else:
                raw = self._encode_conditional(tokens, ctx)
            raw = raw.view(chunk.shape[0], n_seq, -1)
            raws.append(raw)
            feats.append(torch.stack([self._class_features(r) for r in raw]))
        text_features = torch.cat(feats)  # (B, C, D)
        logits = self.clip.logit_scale.exp() * torch.einsum("bd,bcd->bc", image_features, text_features)
        return Output(logits, image_features, text_features, raw_img, torch.cat(raws), images, vision_shifts=vshifts)

    def _encode_conditional(self, tokens: Tensor, ctx: Tensor) -> Tensor:
        return self.clip.forward_text(tokens, [ctx]).features

    def compute_loss(self, out: Output, labels: Tensor) -> tuple[Tensor, dict[str, float]]:
        """Cross-entropy plus every loss term; returns the total and each weighted component as a float."""
        parts: dict[str, Tensor] = {"ce": self.ce_weight * F.cross_entropy(out.logits, labels)}
        for term in self.losses:
            parts.update(term(self, out, labels))
        if self.training:
            for hook in self.step_hooks:
                hook(self, out)
        total = torch.stack([v.float() for v in parts.values()]).sum()
        logs = {k: float(v.detach()) for k, v in parts.items()}
        logs.update(out.logs)
        return total, logs

    def end_epoch(self, epoch: int, total_epochs: int) -> None:
        """After training epoch ``epoch`` of ``total_epochs`` (1-based)."""
        for hook in self.epoch_hooks:
            hook(epoch, total_epochs)

    # --- what the method tunes (RESTORE's regulariser and the shift profile read it) -------------------
    def prompted_towers(self) -> set[str]:
        """The towers the method changes through prompt tokens."""
        towers = {"vision"} if self.vision is not None else set()
        return towers | ({"text"} if not self.text.conditional and self.text.layer_prompts() else set())

    def tuned_towers(self) -> set[str]:
        """The towers the method changes: the prompted ones; a method that also changes blocks otherwise
        (weight deltas: LoRA; its own tokens: MMRL) adds those."""
        return self.prompted_towers()

    def tuned_backbone(self) -> AbstractContextManager[None]:
        """The backbone as the method runs it: unchanged here; a method with weight deltas (LoRA) attaches them."""
        return nullcontext()

    # --- shift profile (restore.analysis.shift) --------------------------------------------------------
    def text_shift_stats(self, request: ShiftRequest) -> list[ShiftStats | None]:
        """Per-layer shift stats of the text tower on the current classes, for the shift profile that `restore
        analyze` and a run's record report (one entry per block, None where nothing is learned). The default runs
        CLIP's tower with the parts' prompts (and any weight deltas attached: a LoRA method is called inside its
        `tuned_backbone()`); a method that runs its towers itself (MMRL) overrides both hooks."""
        prompts = self.text.layer_prompts() if not self.text.conditional else []
        tuned = bool(prompts) or self.clip.transformer.any_delta()
        return self.clip.forward_text(self.tokens, prompts, request).shifts if tuned else []

    def image_shift_stats(self, images: Tensor, request: ShiftRequest) -> list[ShiftStats | None]:
        """Per-layer shift stats of the image tower on ``images`` (per image); see `text_shift_stats`. An
        untouched image tower (text-only methods) has nothing to measure and is not run."""
        text = self.text.layer_prompts() if not self.text.conditional else []
        prompts = self.vision.layer_prompts(text) if self.vision is not None else []
        tuned = bool(prompts) or self.clip.visual.transformer.any_delta()
        return self.clip.forward_image(images, prompts, request).shifts if tuned else []

    # --- evaluation -------------------------------------------------------------------------------------
    @torch.no_grad()
    def class_features(self) -> Tensor | None:
        """(C, D) text features of the current classes, computed once per evaluation; None when the text
        depends on the image (then `predict` runs the text side per batch)."""
        if self.text.conditional:
            return None
        raw = self.clip.forward_text(self.tokens, self.text.layer_prompts()).features
        return self._class_features(raw)

    @torch.no_grad()
    def predict(self, images: Tensor, class_features: Tensor | None = None) -> Tensor:
        """Logits for a test batch; with ``class_features`` the text side is not run again."""
        if class_features is None:
            return self.forward(images, shift=None).logits  # evaluation never runs the prompt-free pass
        vision_prompts = self.vision.layer_prompts(self.text.layer_prompts()) if self.vision is not None else []
        raw = self.clip.forward_image(images, vision_prompts).features
        image_features = F.normalize(self._adapt(self.image_adapter, raw), dim=-1)
        return self.clip.logit_scale.exp() * image_features @ class_features.t()


def config_dict(config: MethodConfig) -> dict[str, Any]:
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
