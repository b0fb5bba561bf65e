"""Rendering shifts: how a downstream task's camera differs from the one pretraining saw.

Real prompt-learning benchmarks sit at a distance from CLIP's pretraining (satellite sensors in EuroSAT,
texture close-ups in DTD); 16 shots can close part of that distance for the classes they show. A task's
``Shift`` moves its images away from the pretraining renderer in one of these ways, applied to the rendered
pixels in a fixed order (rotation, resolution, blur, colour, contrast, noise), so labels and scenes stay exactly what
the task defines and only the pixel statistics change:

- ``rotate``: the camera is rolled by this many degrees (border pixels extend the background);
- ``lowres``: the sensor samples every ``lowres`` pixels (area-average down, nearest up): fine detail
  (patterns, thin shape parts) is lost, as in low-resolution sensors;
- ``blur``: a box blur of that width (defocus);
- ``hue``: a rotation of the hue by this many degrees in YIQ space (a sensor with other colour filters:
  with +30, red objects look orange-red and purple ones blue; with -30, red looks crimson and purple
  magenta; greys, black and white stay as they are);
- ``contrast``: pixel values pulled towards each image's mean by this factor (haze, flat lighting);
- ``noise``: uniform sensor noise of this amplitude (0..255 scale), a pure function of the image's key.

Everything is deterministic numpy/torch on uint8 arrays, so a task stays a pure function of its definition.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from restore.world.generator import hash_uniform

_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], dtype=np.float64)


@dataclass(frozen=True)
class Shift:
    lowres: int = 1
    blur: int = 1
    hue: float = 0.0
    contrast: float = 1.0
    noise: float = 0.0
    rotate: float = 0.0

    def __post_init__(self) -> None:
        if self.lowres < 1 or self.blur < 1 or self.blur % 2 == 0:
            raise ValueError(f"lowres must be >= 1 and blur an odd width >= 1, got {self.lowres}, {self.blur}")
        if not 0.0 < self.contrast <= 1.0 or self.noise < 0:
            raise ValueError(f"contrast must be in (0, 1] and noise >= 0, got {self.contrast}, {self.noise}")

    @property
    def is_identity(self) -> bool:
        return self == Shift()

    def describe(self) -> str:
        parts = []
        if self.lowres > 1:
            parts.append(f"{self.lowres}x lower resolution")
        if self.blur > 1:
            parts.append(f"blur {self.blur}px")
        if self.hue:
            parts.append(f"hue rotated {self.hue:g} deg")
        if self.contrast < 1:
            parts.append(f"contrast x{self.contrast:g}")
        if self.noise:
            parts.append(f"noise +-{self.noise:g}")
        if self.rotate:
            parts.append(f"camera rolled {self.rotate:g} deg")
        return ", ".join(parts) or "none"

    def to_dict(self) -> dict:
        return asdict(self)

    def apply(self, images: np.ndarray, keys: np.ndarray) -> np.ndarray:
        """(N, S, S, 3) uint8 -> shifted uint8; ``keys`` (N,) uint64 seed each image's noise."""
        if self.is_identity:
            return images
        x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).to(torch.float64)
        s = x.shape[-1]
        if self.rotate:
            a = math.radians(self.rotate)
            theta = torch.tensor([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0]], dtype=x.dtype)
            grid = F.affine_grid(theta.expand(len(x), 2, 3), list(x.shape), align_corners=False)
            x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        if self.lowres > 1:
            x = F.interpolate(F.interpolate(x, size=s // self.lowres, mode="area"), size=s, mode="nearest")
        if self.blur > 1:
            x = F.avg_pool2d(x, self.blur, 1, self.blur // 2, count_include_pad=False)
        y = x.permute(0, 2, 3, 1).numpy()
        if self.hue:
            a = -math.radians(self.hue)  # so that +degrees turns HSV hue forward: red -> orange -> yellow
            rot = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
            y = y @ (np.linalg.inv(_YIQ) @ rot @ _YIQ).T
        if self.contrast < 1:
            mean = y.mean(axis=(1, 2, 3), keepdims=True)
            y = mean + self.contrast * (y - mean)
        if self.noise:
            u = hash_uniform(keys.astype(np.uint64), y[0].size).reshape(y.shape)
            y = y + self.noise * (2 * u - 1)
        return np.clip(np.floor(y + 0.5), 0, 255).astype(np.uint8)
