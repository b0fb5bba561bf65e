"""TCP (Yao et al., CVPR 2024): CoOp plus class-aware prompt tokens made from the frozen CLIP's text features.

The Textual Knowledge Embedding (TKE) maps each class's hand-written-prompt feature of the frozen CLIP
(D -> D/4 -> QuickGELU -> n_ctx * W) to n_ctx tokens that are written over the context positions at the
input of text block 8, so every class gets its own prompt from its name alone; a new class set only needs
its names. The loss adds KgCoOp's pull of the learned class features towards those frozen features (w = 8).

Text tower only: RESTORE's regulariser (feature shift and surgery on both towers) has nothing to attach to on
the image side, so there is no ``restore_tcp``.

Sources (htyao89/Textual-based_Class-aware_prompt_tuning): trainers/tcp.py (TKE, templates, loss weight 8.0),
trainers/clip_text/model.py (``layers=[8]``, ``weights=[1.0]``: block 8's input, full replacement),
configs/trainers/TCP/vit_b16_ep100_ctxv1.yaml (``CTX_INIT: False``), scripts/base2new_train.sh (NCTX 4).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from restore.clip.model import CLIP, QuickGELU
from restore.clip.templates import KGCOOP_TEMPLATES, check_template
from restore.errors import ConfigError
from restore.methods.base import MAX_TEXT_PROMPT_TOKENS, MethodConfig, PromptedCLIP, register
from restore.methods.kgcoop import KnowledgeGuidance
from restore.methods.parts import ContextText, FrozenTeacher
from restore.options import option

# trainers/tcp.py CUSTOM_TEMPLATES_ori: the frozen CLIP's sentence per dataset, the TKE's input and the
# target of the knowledge guidance. KgCoOp's table except two datasets.
TEACHER_TEMPLATES: dict[str, str] = {
    **KGCOOP_TEMPLATES,
    "FGVCAircraft": "a photo of an aircraft {}.",
    "Food101": "a photo of a {}, a type of food.",
}
# trainers/tcp.py CUSTOM_TEMPLATES: what follows the 4 learnable tokens in the prompted sentence ("X X X X"
# and UCF101's / ImageNet's "a photo of a" are the positions the context replaces). StanfordCars' sentence
# has no full stop in the release; kept.
PROMPT_SUFFIXES: dict[str, str] = {
    "OxfordPets": "{}, a type of pet.",
    "OxfordFlowers": "{}, a type of flower.",
    "FGVCAircraft": "{}, a type of aircraft.",
    "DescribableTextures": "{} texture.",
    "EuroSAT": "{}.",
    "StanfordCars": "{}, a type of car",
    "Food101": "{}, a type of food.",
    "SUN397": "{}.",
    "Caltech101": "{}.",
    "UCF101": "person doing {}.",
    "ImageNet": "{}.",
    "ImageNetSketch": "{}.",
    "ImageNetV2": "{}.",
    "ImageNetA": "{}.",
    "ImageNetR": "{}.",
}
DEFAULT_TEACHER = "a photo of a {}."
DEFAULT_SUFFIX = "{}."


def teacher_template(dataset: str | None) -> str:
    return TEACHER_TEMPLATES.get(dataset or "", DEFAULT_TEACHER)


def prompt_suffix(dataset: str | None) -> str:
    return PROMPT_SUFFIXES.get(dataset or "", DEFAULT_SUFFIX)


class TextKnowledgeEmbedding(nn.Sequential):
    """(C, D) frozen class features -> (C, n_ctx, W) class-aware tokens: Linear(D, D/r), QuickGELU,
    Linear(D/r, n_ctx * W), PyTorch's default Linear initialisation (the release's ``meta_net``)."""

    def __init__(self, embed_dim: int, width: int, n_ctx: int, reduction: int) -> None:
        hidden = max(1, embed_dim // reduction)
        super().__init__(nn.Linear(embed_dim, hidden), QuickGELU(), nn.Linear(hidden, n_ctx * width))
        self.n_ctx, self.width = n_ctx, width

    def forward(self, features: Tensor) -> Tensor:
        out = super().forward(features.to(self[0].weight.dtype))
        return out.view(features.shape[0], self.n_ctx, self.width)


class ClassAwareText(ContextText):
    """CoOp's shared context at the input, plus per-class tokens from the TKE written over the same positions
    at the input of block ``insert_layer``.

    The frozen class features are a non-persistent buffer (never in a checkpoint): the model sets them for
    each class set (`TCPModel.set_classes`), so evaluation on unseen classes uses their own names.
    """

    def __init__(
        self,
        clip: CLIP,
        n_ctx: int,
        init: str | None,
        *,
        insert_layer: int,
        reduction: int,
        suffix: str,
        fixed_suffix: bool,
    ) -> None:
        super().__init__(clip, n_ctx, init)
        layers = clip.cfg.text.layers
        # The release's block 8 of 12; a smaller backbone (tests) gets its last block.
        self.insert_layer = min(insert_layer, layers - 1)
        if self.insert_layer < 1:
            raise ConfigError(
                f"TCP needs a text tower of 2 blocks or more (context at block 0, class tokens after); it has {layers}",
                hint="use a backbone with a deeper text tower",
            )
        self.prefix = init.replace("_", " ").strip() if init else " ".join(["X"] * n_ctx)
        self.fixed_suffix = fixed_suffix
        self.templates = (f"{self.prefix} {suffix}",)
        self.tke = TextKnowledgeEmbedding(clip.cfg.embed_dim, clip.cfg.text.width, n_ctx, reduction)
        self.register_buffer("class_embeddings", torch.zeros(0, clip.cfg.embed_dim), persistent=False)

    def use_dataset(self, dataset: str | None) -> None:
        if not self.fixed_suffix:
            self.templates = (f"{self.prefix} {prompt_suffix(dataset)}",)

    def set_class_embeddings(self, features: Tensor) -> None:
        self.class_embeddings = features.detach().to(self.class_embeddings.device, torch.float32)

    def class_tokens(self) -> Tensor:
        """(C, n_ctx, W): the TKE of the current classes' frozen features."""
        if self.class_embeddings.shape[0] == 0:
            raise RuntimeError("TCP's class-aware tokens need the class set: call set_classes first")
        return self.tke(self.class_embeddings)

    def layer_prompts(self, image_features: Tensor | None = None) -> list[Tensor | None]:
        tokens = self.class_tokens().repeat_interleave(len(self.templates), dim=0)  # one per sentence
        return [self.ctx, *([None] * (self.insert_layer - 1)), tokens]


class TCPModel(PromptedCLIP):
    """Sets the TKE's input, the frozen CLIP's features of the current classes, with every class set."""

    text: ClassAwareText

    @property
    def guidance(self) -> KnowledgeGuidance:
        term = self.losses[0]
        assert isinstance(term, KnowledgeGuidance)
        return term

    def set_classes(self, classnames: Sequence[str], dataset: str | None = None) -> None:
        super().set_classes(classnames, dataset)
        config = self.config
        assert isinstance(config, TCPConfig)
        template = config.template or teacher_template(self.dataset)
        if self.guidance.teacher.templates != (template,):  # another dataset's sentence (cross-dataset tests)
            self.guidance.teacher = FrozenTeacher((template,))
        self.text.set_class_embeddings(self.guidance.teacher.text_features(self.clip, self.classnames))


@register(
    "tcp",
    "TCP: CoOp + class-aware tokens (TKE of frozen class text features) at text block 8 + KgCoOp term (w=8); "
    "text tower only, so no RESTORE variant"
    ,
)
@dataclass
class TCPConfig(MethodConfig):
    n_ctx: int = option(
        4, help="context tokens, also the class-aware tokens per class (scripts/base2new_train.sh NCTX=4)",
        min=1, max=MAX_TEXT_PROMPT_TOKENS,
    )  # fmt: skip
    ctx_init: str | None = option(
        None, help="null: random N(0, 0.02^2) context (the release's CTX_INIT: False); e.g. 'a photo of a'"
    )
    weight: float = option(
        8.0, help="knowledge-guidance weight (8.0 in trainers/tcp.py's loss; the scripts' WEIGHT is unused)", min=0.0
    )
    insert_layer: int = option(
        8, help="text block whose input takes the class-aware tokens (clip_text/model.py layers=[8])", min=1
    )
    reduction: int = option(4, help="TKE hidden width = embed_dim / reduction (trainers/tcp.py: 512 -> 128)", min=1)
    template: str | None = option(
        None, help="frozen sentence of the TKE input and the guidance; null: TCP's per-dataset CUSTOM_TEMPLATES_ori"
    )
    prompt_suffix: str | None = option(
        None, help="what follows the context in the prompt, with {}; null: TCP's per-dataset CUSTOM_TEMPLATES"
    )

    def __post_init__(self) -> None:
        """Both sentences are formatted with each class name: a bad one fails here, not mid-run."""
        examples = {"template": "a photo of a {}, a type of pet.", "prompt_suffix": "{}, a type of pet."}
        for key, example in examples.items():
            value = getattr(self, key)
            if value is None:
                continue
            try:
                check_template(value)
            except ConfigError as err:
                raise ConfigError(f"method (tcp).{key}: {err.message}", hint=f"e.g. {key}: '{example}'") from None

    def build(self, clip: CLIP, *, dataset: str | None = None, n_classes: int = 0) -> PromptedCLIP:
        text = ClassAwareText(
            clip, self.n_ctx, self.ctx_init, insert_layer=self.insert_layer, reduction=self.reduction,
            suffix=self.prompt_suffix or prompt_suffix(dataset), fixed_suffix=self.prompt_suffix is not None,
        )  # fmt: skip
        guidance = KnowledgeGuidance(self.template or teacher_template(dataset), self.weight)
        return TCPModel(clip, self, text=text, losses=[guidance], dataset=dataset)
