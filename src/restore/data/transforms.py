"""Image preprocessing: CLIP's evaluation transform and the CoOp family's training augmentation.

Both take a PIL image (any mode; converted to RGB) and return a float tensor 3×size×size normalised with CLIP's
mean and std. Bicubic everywhere, as CLIP and Dassl use.
"""

from __future__ import annotations

import torch
from PIL import Image
from torchvision.transforms import v2

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
BICUBIC = v2.InterpolationMode.BICUBIC


def to_rgb(image: Image.Image) -> Image.Image:
    return image if image.mode == "RGB" else image.convert("RGB")


def _to_normalised_tensor() -> list:
    return [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(CLIP_MEAN, CLIP_STD)]


def eval_transform(size: int = 224) -> v2.Compose:
    """CLIP's preprocessing: shorter side to `size` (bicubic), centre crop, RGB, [0, 1], normalise."""
    return v2.Compose(
        [v2.Lambda(to_rgb), v2.Resize(size, interpolation=BICUBIC), v2.CenterCrop(size), *_to_normalised_tensor()]
    )


def train_transform(size: int = 224, min_scale: float = 0.08) -> v2.Compose:
    """CoOp's augmentation: random resized crop (scale 0.08-1, bicubic), horizontal flip, normalise.

    ``min_scale`` is the smallest crop area: 0.08 is CoOp's; small synthetic images of one object (the world)
    want larger crops, or most crops miss the object."""
    return v2.Compose(
        [
            v2.Lambda(to_rgb),
            v2.RandomResizedCrop(size, scale=(min_scale, 1.0), interpolation=BICUBIC),
            v2.RandomHorizontalFlip(),
            *_to_normalised_tensor(),
        ]
    )
