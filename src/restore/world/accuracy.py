"""Minimal zero-shot top-1 accuracy for the world's tasks (the general zero-shot classifier lives elsewhere)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from restore.clip.model import CLIP
from restore.clip.tokenizer import tokenize
from restore.data.protocols import base_class_count
from restore.world.tasks import get_task, task_images

# OpenAI CLIP's normalisation: the world model is trained with it so the standard CLIP transforms apply.
MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)


def to_input(images: np.ndarray) -> torch.Tensor:
    """(N, S, S, 3) uint8 -> (N, 3, S, S) float, CLIP-normalised."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (x - mean) / std


@torch.no_grad()
def class_text_features(model: CLIP, classnames: Sequence[str], template: str) -> torch.Tensor:
    tokens = tokenize([template.format(c) for c in classnames], context_length=model.context_length)
    return F.normalize(model.encode_text(tokens), dim=-1)


@torch.no_grad()
def zero_shot_accuracy(
    model: CLIP,
    images: np.ndarray,
    labels: np.ndarray,
    classnames: Sequence[str],
    template: str = "a photo of a {}.",
    batch_size: int = 500,
) -> float:
    """Top-1 accuracy of classifying ``images`` by cosine similarity to one text per class."""
    was_training = model.training
    model.eval()
    text = class_text_features(model, classnames, template)
    correct = 0
    for start in range(0, len(images), batch_size):
        feats = model.encode_image(to_input(images[start : start + batch_size]))
        pred = model.logits(feats, text).argmax(dim=-1).numpy()
        correct += int((pred == labels[start : start + batch_size]).sum())
    model.train(was_training)
    return correct / max(1, len(images))


def base_novel_zero_shot(model: CLIP, task: str, template: str = "a photo of a {}.") -> tuple[float, float]:
    """(base, novel) top-1 of zero-shot CLIP on a world task's test split, each half classified among its own
    classes as base-to-novel does (base = the first ceil(n/2) labels)."""
    names = get_task(task).classnames
    images, labels = task_images(task, "test")
    n_base = base_class_count(len(names))
    base = labels < n_base
    return (
        zero_shot_accuracy(model, images[base], labels[base], names[:n_base], template),
        zero_shot_accuracy(model, images[~base], labels[~base] - n_base, names[n_base:], template),
    )
