"""Procedural image-caption pairs: a pure function of (seed, index), rendered a batch at a time.

Sampling a scene is cheap scalar work per index (its own counter-seeded numpy generator, so any index can be
made alone and batches can be cut anywhere); rendering is vectorised over the batch (signed-distance shapes,
anti-aliased edges), which keeps the generator far faster than the model it feeds.

Hard-negative groups: with ``group_size`` k > 1, indices k*g .. k*g+k-1 form group g; with probability
``hard_group_prob`` its members are one scene that differs only in one attribute (shape, colour or pattern),
and each caption names that attribute, so a contrastive batch cannot be solved by colour alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from restore.world import lexicon as L
from restore.world.captions import Mentions, describe_pair, describe_single

N_SHAPES, N_COLOURS, N_PATTERNS, N_SIZES, N_BACKGROUNDS = (
    len(L.SHAPES),
    len(L.COLOURS),
    len(L.PATTERNS),
    len(L.SIZES),
    len(L.BACKGROUNDS),
)
ARROW = [v.name for v in L.SHAPES].index("arrow")
_BG_INDEX = {v.name: i for i, v in enumerate(L.BACKGROUNDS)}
_COLOUR_INDEX = {v.name: i for i, v in enumerate(L.COLOURS)}
# Allowed backgrounds per colour (never a colour on a background it would vanish into).
ALLOWED_BG: tuple[tuple[int, ...], ...] = tuple(
    tuple(b for b in range(N_BACKGROUNDS) if L.BACKGROUNDS[b].name not in L.CLASHES.get(c.name, ())) for c in L.COLOURS
)
_STREAM_SCENE, _STREAM_CAPTION, _STREAM_GROUP = 0, 1, 2
VARIED = ("shape", "colour", "pattern")


@dataclass(frozen=True)
class WorldConfig:
    """What the generator draws from. Part of a pretraining config; tasks use single-object defaults."""

    image_size: int = 48
    two_object_prob: float = 0.2
    group_size: int = 1
    hard_group_prob: float = 0.0
    # Curriculum: the probability that a scene is an easy one (one large or medium solid object on a plain
    # background). Pretraining lowers it over the first steps; 0 leaves every scene's random stream as is.
    easy_prob: float = 0.0
    # How often a caption names an object's colour. Colour is the easiest attribute to see; captions that
    # leave it out make shape and pattern carry the match.
    colour_mention: float = 0.85

    def __post_init__(self) -> None:
        if self.image_size < 16:
            raise ValueError(f"image_size {self.image_size} is too small to draw shapes (>= 16)")
        if self.group_size < 1:
            raise ValueError(f"group_size must be >= 1, got {self.group_size}")


@dataclass
class Obj:
    shape: int
    colour: int
    pattern: int
    size: int
    cx: float
    cy: float
    radius: float
    rotation: float  # radians
    rgb: tuple[float, float, float]
    stripe_angle: float

    def position(self, image_size: int) -> tuple[int, int]:
        """(column, row) on a 3x3 grid: what a caption's position phrase describes."""
        return _grid(self.cx, image_size), _grid(self.cy, image_size)


@dataclass
class Scene:
    objects: list[Obj]
    background: int
    bg_rgb: tuple[tuple[float, float, float], tuple[float, float, float]]
    bg_angle: float
    noise_seed: int
    layout: str = "single"  # "single" | "horizontal" | "vertical" (two objects: slot 0 left/top)
    caption: str = ""
    mentions: Mentions = field(default_factory=Mentions)


def _grid(c: float, size: int) -> int:
    return 0 if c < 0.4 * size else (2 if c > 0.6 * size else 1)


_CELLS = ((0.0, 0.4), (0.4, 0.6), (0.6, 1.0))


_MASK = (1 << 64) - 1


def _mix(x: int) -> int:
    """splitmix64's finaliser on a Python int: a well-spread 64-bit key."""
    x &= _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def world_key(seed: int, stream: int, index: int) -> int:
    return _mix(_mix(_mix(int(seed)) + stream) + int(index))


class Draws:
    """A per-sample random stream: uniforms from a counter-based hash of the sample's key.

    Counter-based, so a batch's streams come from one vectorised call and never depend on the numpy
    version or on which other samples are drawn alongside.
    """

    BLOCK = 48

    def __init__(self, key: int, values: list[float] | None = None) -> None:
        self.key = key
        self.values = (
            values if values is not None else hash_uniform(np.array([key], np.uint64), self.BLOCK)[0].tolist()
        )
        self.i = 0

    def random(self) -> float:
        if self.i == len(self.values):
            more = hash_uniform(np.array([self.key], np.uint64), self.BLOCK, start=len(self.values))
            self.values.extend(more[0].tolist())
        x = self.values[self.i]
        self.i += 1
        return x

    def integers(self, n: int) -> int:
        return min(int(self.random() * n), n - 1)

    def uniform(self, a: float, b: float) -> float:
        return a + (b - a) * self.random()

    def permutation(self, items: Sequence[int]) -> list[int]:
        out = list(items)
        for i in range(len(out) - 1, 0, -1):
            j = self.integers(i + 1)
            out[i], out[j] = out[j], out[i]
        return out


def _draws(seed: int, stream: int, indices: Sequence[int]) -> list[Draws]:
    keys = [world_key(seed, stream, i) for i in indices]
    values = hash_uniform(np.array(keys, dtype=np.uint64), Draws.BLOCK)
    return [Draws(k, v) for k, v in zip(keys, values.tolist(), strict=True)]


def _rng(seed: int, stream: int, index: int) -> Draws:
    return Draws(world_key(seed, stream, index))


def _jitter_rgb(rng: Draws, colour: int) -> tuple[float, float, float]:
    r, g, b = (min(255.0, max(0.0, c + rng.integers(25) - 12.0)) for c in L.COLOUR_RGB[colour])
    return r, g, b


def _object(
    rng: Draws,
    s: int,
    shape: int | None = None,
    colour: int | None = None,
    pattern: int | None = None,
    size: int | None = None,
    box: tuple[float, float, float, float] | None = None,
) -> Obj:
    """One object; ``box`` (x0, x1, y0, y1) confines its centre (two-object layouts), else a 3x3 cell."""
    shape = rng.integers(N_SHAPES) if shape is None else shape
    colour = rng.integers(N_COLOURS) if colour is None else colour
    pattern = rng.integers(N_PATTERNS) if pattern is None else pattern
    size = rng.integers(N_SIZES) if size is None else size
    lo, hi = L.SIZE_RADIUS[size]
    radius = s * rng.uniform(lo, hi)
    if box is None:
        col, row = rng.integers(3), rng.integers(3)
        box = (_CELLS[col][0] * s, _CELLS[col][1] * s, _CELLS[row][0] * s, _CELLS[row][1] * s)
    x0, x1 = max(box[0], radius + 1), min(box[1], s - radius - 1)
    y0, y1 = max(box[2], radius + 1), min(box[3], s - radius - 1)
    cx = rng.uniform(x0, max(x0, x1 - 1e-3))
    cy = rng.uniform(y0, max(y0, y1 - 1e-3))
    rotation = math.radians(rng.uniform(-12, 12))
    if shape == ARROW:
        rotation += math.pi / 2 * rng.integers(4)
    stripe_angle = math.radians(45 * rng.integers(4))
    return Obj(shape, colour, pattern, size, cx, cy, radius, rotation, _jitter_rgb(rng, colour), stripe_angle)


def _background(rng: Draws, colours: Sequence[int], only: Sequence[int] | None = None) -> tuple[int, tuple, float, int]:
    allowed = sorted(set.intersection(*(set(ALLOWED_BG[c]) for c in colours)))
    if only is not None:
        allowed = [b for b in allowed if b in only]
    bg = allowed[rng.integers(len(allowed))]
    name = L.BACKGROUNDS[bg].name

    def grey(lo: int, hi: int) -> tuple[float, float, float]:
        level = lo + rng.integers(hi - lo)
        r, g, b = (float(min(255, max(0, level + rng.integers(17) - 8))) for _ in range(3))
        return r, g, b

    if name == "dark":
        c1 = c2 = grey(15, 45)
    elif name == "light":
        c1 = c2 = grey(205, 240)
    elif name == "gradient":
        c1 = (40.0 + rng.integers(50), 40.0 + rng.integers(50), 40.0 + rng.integers(50))
        c2 = (160.0 + rng.integers(60), 160.0 + rng.integers(60), 160.0 + rng.integers(60))
    else:
        c1 = c2 = grey(95, 150)
    angle = rng.uniform(0, 2 * math.pi)
    return bg, (c1, c2), angle, rng.integers(2**53)


def _hard_group(seed: int, group: int, member: int, cfg: WorldConfig) -> Scene | None:
    """The member's scene if its group is a hard-negative group, else None."""
    g = _rng(seed, _STREAM_GROUP, group)
    if g.random() >= cfg.hard_group_prob:
        return None
    varied = VARIED[g.integers(len(VARIED))]
    k = cfg.group_size
    base = _object(g, cfg.image_size)
    if varied == "colour":
        bg, bg_rgb, angle, noise = _background(g, [base.colour])
        pool = [c for c in range(N_COLOURS) if bg in ALLOWED_BG[c]]
    else:
        bg, bg_rgb, angle, noise = _background(g, [base.colour])
        pool = list(range(N_SHAPES if varied == "shape" else N_PATTERNS))
    values = g.permutation(pool)
    value = values[member % len(values)]
    obj = Obj(**{**base.__dict__})
    if varied == "shape":
        obj.shape = value
        if value == ARROW and base.shape != ARROW:
            obj.rotation += math.pi / 2 * g.integers(4)
    elif varied == "colour":
        obj.colour = value
        obj.rgb = _jitter_rgb(_rng(seed, _STREAM_SCENE, group * k + member), value)
    else:
        obj.pattern = value
    scene = Scene([obj], bg, bg_rgb, angle, noise)
    scene.caption, scene.mentions = describe_single(
        _rng(seed, _STREAM_CAPTION, group * k + member),
        obj,
        cfg.image_size,
        bg,
        force=varied,
        p_colour=cfg.colour_mention,
    )
    return scene


def _scene(seed: int, index: int, cfg: WorldConfig, fixed: dict[str, int] | None, rng: Draws, crng: Draws) -> Scene:
    if fixed is None and cfg.group_size > 1 and cfg.hard_group_prob > 0:
        scene = _hard_group(seed, index // cfg.group_size, index % cfg.group_size, cfg)
        if scene is not None:
            return scene
    s = cfg.image_size
    if fixed is None and cfg.easy_prob > 0 and rng.random() < cfg.easy_prob:
        obj = _object(rng, s, pattern=0, size=1 + rng.integers(2))
        obj.rotation = 0.0 if obj.shape != ARROW else obj.rotation
        plain = [b for b in ALLOWED_BG[obj.colour] if L.BACKGROUNDS[b].name in ("dark", "light")]
        bg, bg_rgb, angle, noise = _background(rng, [obj.colour], only=plain)
        scene = Scene([obj], bg, bg_rgb, angle, noise)
        scene.caption, scene.mentions = describe_single(crng, obj, s, bg, p_colour=cfg.colour_mention)
        return scene
    if fixed is None and rng.random() < cfg.two_object_prob:
        layout = "horizontal" if rng.random() < 0.5 else "vertical"
        half = s / 2
        boxes = ((0, half, 0, s), (half, s, 0, s)) if layout == "horizontal" else ((0, s, 0, half), (0, s, half, s))
        objs = [_object(rng, s, size=rng.integers(2), box=b) for b in boxes]
        bg, bg_rgb, angle, noise = _background(rng, [o.colour for o in objs])
        scene = Scene(objs, bg, bg_rgb, angle, noise, layout)
        scene.caption, scene.mentions = describe_pair(crng, objs, layout, bg, p_colour=cfg.colour_mention)
        return scene
    obj = _object(rng, s, **(fixed or {}))
    bg, bg_rgb, angle, noise = _background(rng, [obj.colour])
    scene = Scene([obj], bg, bg_rgb, angle, noise)
    scene.caption, scene.mentions = describe_single(crng, obj, s, bg, p_colour=cfg.colour_mention)
    return scene


def sample_scene(
    seed: int,
    index: int,
    cfg: WorldConfig = WorldConfig(),
    fixed: dict[str, int] | None = None,
) -> Scene:
    """The scene and caption at ``index`` of the world drawn from ``seed``; ``fixed`` pins attributes of a
    single object (tasks: e.g. {"shape": 3, "colour": 0}) and turns off pairs and groups."""
    return _scene(seed, index, cfg, fixed, _rng(seed, _STREAM_SCENE, index), _rng(seed, _STREAM_CAPTION, index))


def sample_scenes(
    seed: int,
    indices: Sequence[int],
    cfg: WorldConfig = WorldConfig(),
    fixed: dict[str, int] | None = None,
) -> list[Scene]:
    """`sample_scene` for many indices, with their random streams drawn in one vectorised call."""
    indices = [int(i) for i in indices]
    rngs = _draws(seed, _STREAM_SCENE, indices)
    crngs = _draws(seed, _STREAM_CAPTION, indices)
    return [_scene(seed, i, cfg, fixed, r, c) for i, r, c in zip(indices, rngs, crngs, strict=True)]


# --- rendering --------------------------------------------------------------------------------------------


def _box(u: np.ndarray, v: np.ndarray, a: float, b: float) -> np.ndarray:
    return np.maximum(np.abs(u) - a, np.abs(v) - b)


def _polygon(u: np.ndarray, v: np.ndarray, n: int, radius: float, phase: float = np.pi / 2) -> np.ndarray:
    """Regular n-gon with circumradius ``radius`` and a vertex at angle ``phase``."""
    apothem = radius * np.cos(np.pi / n)
    d = np.full(u.shape, -np.inf, dtype=u.dtype)
    for k in range(n):
        a = phase + 2 * np.pi * (k + 0.5) / n
        d = np.maximum(d, u * np.cos(a) + v * np.sin(a) - apothem)
    return d


def _star(u: np.ndarray, v: np.ndarray, outer: float = 1.0, inner: float = 0.45, n: int = 5) -> np.ndarray:
    """Distance to a straight-edged star, by folding the angle into one half-spike."""
    rho = np.hypot(u, v)
    wedge = 2 * np.pi / n
    phi = np.mod(np.arctan2(v, u) - np.pi / 2, wedge)
    phi = np.where(phi > wedge / 2, wedge - phi, phi)
    qx, qy = rho * np.cos(phi), rho * np.sin(phi)
    p1 = np.array([outer, 0.0])
    p2 = np.array([inner * np.cos(wedge / 2), inner * np.sin(wedge / 2)])
    e = p2 - p1
    nrm = np.array([-e[1], e[0]]) / np.hypot(*e)
    if nrm @ p1 < 0:
        nrm = -nrm
    return qx * nrm[0] + qy * nrm[1] - nrm @ p1


def _heart(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Inigo Quilez's heart distance, scaled to span about [-1, 1]."""
    x, y = np.abs(u) * 0.6, (v + 1.0) * 0.55
    upper = np.hypot(x - 0.25, y - 0.75) - np.sqrt(2) / 4
    t = 0.5 * np.maximum(x + y, 0.0)
    lower = np.sqrt(np.minimum(x**2 + (y - 1) ** 2, (x - t) ** 2 + (y - t) ** 2)) * np.sign(x - y)
    return np.where(x + y > 1.0, upper, lower) / 0.58


def _arrow(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    shaft = _box(u + 0.35, v, 0.55, 0.2)
    slope = 0.7 / 0.9
    head = np.maximum(0.05 - u, (np.abs(v) - slope * (0.95 - u)) / np.hypot(1, slope))
    return np.minimum(shaft, head)


SDF = (
    lambda u, v: np.hypot(u, v) - 0.95,  # circle
    lambda u, v: _box(u, v, 0.8, 0.8),  # square
    lambda u, v: _polygon(u, v + 0.29, 3, 1.15),  # triangle
    lambda u, v: (np.abs(u) + 0.75 * np.abs(v) - 0.75) / 1.25,  # diamond (taller than wide)
    _star,  # star
    lambda u, v: np.minimum(_box(u, v, 0.95, 0.3), _box(u, v, 0.3, 0.95)),  # cross
    _heart,  # heart
    lambda u, v: np.abs(np.hypot(u, v) - 0.66) - 0.3,  # ring
    lambda u, v: np.maximum(np.hypot(u, v) - 0.95, 0.75 - np.hypot(u - 0.45, v - 0.2)),  # crescent
    _arrow,  # arrow
    lambda u, v: np.maximum(np.hypot(u, v + 0.45) - 1.0, -(v + 0.45)),  # semicircle
    lambda u, v: _polygon(u, v, 6, 0.97, phase=0.0),  # hexagon
)
assert len(SDF) == N_SHAPES


def hash_uniform(seeds: np.ndarray, count: int, start: int = 0) -> np.ndarray:
    """(n, count) uniforms in [0, 1) from a splitmix64 hash of (seed, position): per-sample noise, vectorised."""
    counter = np.arange(start + 1, start + count + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        x = seeds.astype(np.uint64)[:, None] + counter * np.uint64(0x9E3779B97F4A7C15)
        x ^= x >> np.uint64(30)
        x *= np.uint64(0xBF58476D1CE4E5B9)
        x ^= x >> np.uint64(27)
        x *= np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(31)
    return (x >> np.uint64(11)).astype(np.float64) / 2.0**53


def _to_uint8(x: np.ndarray) -> np.ndarray:
    """Round half up into 0..255 (inputs are convex mixtures of in-range colours, so clipping is a guard)."""
    return np.clip(x + 0.5, 0, 255).astype(np.uint8)


def _render_backgrounds(scenes: Sequence[Scene], s: int) -> np.ndarray:
    """(N, S, S, 3) uint8 backgrounds; float work only on the gradient and noisy ones."""
    n = len(scenes)
    img = np.empty((n, s, s, 3), dtype=np.uint8)
    img[:] = _to_uint8(np.array([sc.bg_rgb[0] for sc in scenes], dtype=np.float32))[:, None, None, :]
    kinds = np.array([sc.background for sc in scenes])
    grad = np.flatnonzero(kinds == _BG_INDEX["gradient"])
    if grad.size:
        coords = (np.arange(s, dtype=np.float32) + 0.5) / s - 0.5
        ang = np.array([scenes[i].bg_angle for i in grad], dtype=np.float32)
        t = (
            0.5
            + coords[None, None, :] * np.cos(ang)[:, None, None]
            + coords[None, :, None] * np.sin(ang)[:, None, None]
        )
        t = np.clip(t, 0, 1)[..., None]
        c1 = np.array([scenes[i].bg_rgb[0] for i in grad], dtype=np.float32)[:, None, None, :]
        c2 = np.array([scenes[i].bg_rgb[1] for i in grad], dtype=np.float32)[:, None, None, :]
        img[grad] = _to_uint8(c1 + (c2 - c1) * t)
    noisy = np.flatnonzero(kinds == _BG_INDEX["noisy"])
    if noisy.size:
        seeds = np.array([scenes[i].noise_seed for i in noisy], dtype=np.uint64)
        noise = hash_uniform(seeds, s * s).astype(np.float32).reshape(-1, s, s, 1) - 0.5
        base = np.array([scenes[i].bg_rgb[0] for i in noisy], dtype=np.float32)[:, None, None, :]
        img[noisy] = _to_uint8(base + 40.0 * noise)
    return img


def _pattern(pattern: np.ndarray, stripe: np.ndarray, dx: np.ndarray, dy: np.ndarray, s: int) -> np.ndarray:
    """Per-pixel weight of the secondary colour, (n, S, S); dx, dy are pixel offsets from the centre."""
    out = np.zeros(dx.shape, dtype=np.float32)
    names = [p.name for p in L.PATTERNS]
    sel = pattern == names.index("striped")
    if sel.any():
        period = s / 10
        a = stripe[sel][:, None, None]
        proj = dx[sel] * np.cos(a) + dy[sel] * np.sin(a)
        out[sel] = (np.mod(proj / period, 1.0) < 0.5).astype(np.float32)
    sel = pattern == names.index("dotted")
    if sel.any():
        period = s / 8
        gx = np.mod(dx[sel] / period + 0.5, 1.0) - 0.5
        gy = np.mod(dy[sel] / period + 0.5, 1.0) - 0.5
        out[sel] = np.clip(0.5 - (np.hypot(gx, gy) - 0.3) * period, 0, 1)
    sel = pattern == names.index("checkered")
    if sel.any():
        cell = s / 12
        out[sel] = (np.mod(np.floor(dx[sel] / cell) + np.floor(dy[sel] / cell), 2) == 1).astype(np.float32)
    return out


def render(scenes: Sequence[Scene], image_size: int) -> np.ndarray:
    """(N, S, S, 3) uint8 images of ``scenes``: all arithmetic batched over the scenes."""
    s = image_size
    img = _render_backgrounds(scenes, s)
    outline_w = max(1.5, s / 16)
    outlined = [p.name for p in L.PATTERNS].index("outlined")
    for slot in range(2):
        idx = np.array([i for i, sc in enumerate(scenes) if len(sc.objects) > slot], dtype=np.int64)
        if idx.size == 0:
            continue
        objs = [scenes[i].objects[slot] for i in idx]
        # Work in a window around each object (one size for the batch): every shape lies within 1.05
        # radii of its centre, so pixels outside get alpha exactly 0 and the window changes nothing.
        half = math.ceil(max(o.radius for o in objs) * 1.05 + 2)
        w = min(2 * half, s)
        ox = np.clip(np.rint([o.cx for o in objs]).astype(np.int64) - half, 0, s - w)
        oy = np.clip(np.rint([o.cy for o in objs]).astype(np.int64) - half, 0, s - w)
        rows = (oy[:, None] + np.arange(w))[:, :, None]
        cols = (ox[:, None] + np.arange(w))[:, None, :]
        under = np.stack([img[i, y : y + w, x : x + w] for i, y, x in zip(idx, oy, ox, strict=True)]).astype(np.float32)
        cx = np.array([o.cx for o in objs], dtype=np.float32)[:, None, None]
        cy = np.array([o.cy for o in objs], dtype=np.float32)[:, None, None]
        r = np.array([o.radius for o in objs], dtype=np.float32)[:, None, None]
        rot = np.array([o.rotation for o in objs], dtype=np.float32)[:, None, None]
        shape = np.array([o.shape for o in objs])
        pattern = np.array([o.pattern for o in objs])
        dx = cols.astype(np.float32) + 0.5 - cx
        dy = cy - (rows.astype(np.float32) + 0.5)  # up is positive
        dx, dy = np.broadcast_arrays(dx, dy)
        u = (np.cos(rot) * dx + np.sin(rot) * dy) / r
        v = (-np.sin(rot) * dx + np.cos(rot) * dy) / r
        d = np.empty(u.shape, dtype=np.float32)
        for k in np.unique(shape):
            sel = shape == k
            d[sel] = SDF[k](u[sel], v[sel])
        d *= r  # distance in pixels
        alpha = np.clip(0.5 - d, 0, 1)
        hollow = pattern == outlined
        if hollow.any():
            alpha[hollow] -= np.clip(0.5 - (d[hollow] + outline_w), 0, 1)
        rgb = np.array([o.rgb for o in objs], dtype=np.float32)
        lum = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        # A shade of the same colour: the pattern shows, the silhouette stays whole against the background.
        second = np.where(lum[:, None] > 110, rgb * 0.55, rgb + (255 - rgb) * 0.45)
        stripe = np.array([o.stripe_angle for o in objs], dtype=np.float32)
        wt = _pattern(pattern, stripe, dx, dy, s)[..., None]
        colour = rgb[:, None, None, :] * (1 - wt) + second[:, None, None, :] * wt
        a = alpha[..., None]
        over = _to_uint8(under + (colour - under) * a)
        for j, (i, y, x) in enumerate(zip(idx, oy, ox, strict=True)):
            img[i, y : y + w, x : x + w] = over[j]
    return img


@dataclass
class Batch:
    images: np.ndarray  # (N, S, S, 3) uint8
    captions: list[str]
    scenes: list[Scene]


def generate(seed: int, indices: Sequence[int] | range, cfg: WorldConfig = WorldConfig()) -> Batch:
    """Images and captions at ``indices`` of the world drawn from ``seed``."""
    scenes = sample_scenes(seed, indices, cfg)
    return Batch(render(scenes, cfg.image_size), [sc.caption for sc in scenes], scenes)
