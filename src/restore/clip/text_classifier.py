"""Zero-shot classification with the frozen backbone: class-name prompts, template ensembles, accuracy."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from restore.clip.model import CLIP
from restore.clip.tokenizer import tokenize

EnsembleMode = Literal["normalized_mean", "raw_mean"]


def clean_classname(name: str) -> str:
    """Class names as the CoOp family feeds them to the text encoder (underscores become spaces)."""
    return name.replace("_", " ").strip()


@torch.no_grad()
def class_text_features(
    clip: CLIP,
    classnames: Sequence[str],
    templates: Sequence[str],
    *,
    mode: EnsembleMode = "normalized_mean",
    chunk: int = 1000,
) -> Tensor:
    """(C, D) unit-norm text features, one per class, averaged over ``templates``.

    ``normalized_mean`` is CLIP's recipe (normalise per template, average, normalise); ``raw_mean`` averages
    the unnormalised features first, as PromptSRC builds its frozen teacher.
    """
    device = next(clip.parameters()).device
    names = [clean_classname(c) for c in classnames]
    total = None
    for template in templates:
        tokens = tokenize([template.format(n) for n in names], clip.context_length)
        feats = torch.cat(
            [clip.encode_text(tokens[i : i + chunk].to(device)).float() for i in range(0, len(names), chunk)]
        )
        if mode == "normalized_mean":
            feats = F.normalize(feats, dim=-1)
        total = feats if total is None else total + feats
    assert total is not None, "at least one template is needed"
    return F.normalize(total / len(templates), dim=-1)


def topk_correct(logits: Tensor, labels: Tensor, ks: Sequence[int] = (1, 5)) -> dict[int, int]:
    """How many rows have their label among the top k logits, for each k (k capped at the class count)."""
    top = logits.topk(min(max(ks), logits.shape[-1]), dim=-1).indices
    hits = top == labels[:, None]
    return {k: int(hits[:, :k].any(dim=-1).sum()) for k in ks}
