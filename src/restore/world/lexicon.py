"""The synthetic world's attributes and the words for them.

Each attribute value has a canonical name (used in task class names, e.g. "red triangle") and synonyms that
captions draw from, so the text tower learns that "grey" and "gray" mean one thing. The order of each tuple
fixes the integer codes the generator uses; changing it changes every generated image and caption.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Value:
    name: str
    words: tuple[str, ...]  # synonyms; words[0] == name


def _values(*items: tuple[str, ...]) -> tuple[Value, ...]:
    return tuple(Value(words[0], words) for words in items)


SHAPES = _values(
    ("circle", "disc"),
    ("square", "box"),
    ("triangle",),
    ("diamond", "rhombus"),
    ("star",),
    ("cross", "plus sign"),
    ("heart",),
    ("ring", "donut"),
    ("crescent", "moon"),
    ("arrow",),
    ("semicircle", "half circle"),
    ("hexagon",),
)

# (name, synonyms), RGB in 0..255. Chosen far apart so a colour is one word, not a judgement call.
COLOURS = _values(
    ("red",),
    ("orange",),
    ("yellow",),
    ("green",),
    ("blue",),
    ("purple", "violet"),
    ("pink",),
    ("brown",),
    ("cyan", "turquoise"),
    ("white",),
    ("gray", "grey"),
    ("black",),
)
COLOUR_RGB: tuple[tuple[int, int, int], ...] = (
    (220, 30, 30),
    (245, 140, 20),
    (240, 220, 30),
    (40, 170, 50),
    (30, 70, 220),
    (135, 45, 185),
    (245, 120, 190),
    (125, 75, 30),
    (30, 210, 220),
    (245, 245, 245),
    (128, 128, 128),
    (15, 15, 15),
)

PATTERNS = _values(
    ("solid", "plain", "filled"),
    ("striped", "stripy"),
    ("dotted", "spotted", "polka-dot"),
    ("checkered", "checked", "chequered"),
    ("outlined", "hollow"),
)
# Postfix phrases: "a red circle with stripes". Solid has none (it reads as the default).
PATTERN_PHRASES: tuple[tuple[str, ...], ...] = (
    (),
    ("with stripes",),
    ("with dots", "with polka dots"),
    ("with a checkered pattern", "with a checkerboard pattern"),
    ("drawn in outline",),
)

SIZES = _values(("small", "little", "tiny"), ("medium", "medium-sized"), ("large", "big"))
# Radius as a fraction of the image side, per size.
SIZE_RADIUS: tuple[tuple[float, float], ...] = ((0.12, 0.16), (0.185, 0.22), (0.25, 0.30))

BACKGROUNDS = _values(("dark", "black"), ("light", "white"), ("gradient", "shaded"), ("noisy", "grainy"))

# Object colours that would vanish on a background; the generator never pairs them.
CLASHES: dict[str, tuple[str, ...]] = {"black": ("dark",), "white": ("light",), "gray": ("gradient", "noisy")}

# 3x3 grid of where an object's centre lies: (column, row) -> phrases.
POSITION_PHRASES: dict[tuple[int, int], tuple[str, ...]] = {
    (0, 0): ("in the top left corner", "at the top left"),
    (1, 0): ("at the top",),
    (2, 0): ("in the top right corner", "at the top right"),
    (0, 1): ("on the left",),
    (1, 1): ("in the center", "in the middle"),
    (2, 1): ("on the right",),
    (0, 2): ("in the bottom left corner", "at the bottom left"),
    (1, 2): ("at the bottom",),
    (2, 2): ("in the bottom right corner", "at the bottom right"),
}

# Frames around the description. "{a}" is the article the description needs ("a"/"an").
FRAMES: tuple[str, ...] = (
    "a photo of {a} {d}",
    "{a} {d}",
    "an image of {a} {d}",
    "a picture of {a} {d}",
    "a drawing of {a} {d}",
    "a rendering of {a} {d}",
    "there is {a} {d}",
    "this is {a} {d}",
    "{d}",
)
PAIR_FRAMES: tuple[str, ...] = ("a photo of {p}", "{p}", "an image of {p}", "a picture of {p}", "there are {p}")
RELATIONS: tuple[str, ...] = ("to the left of", "to the right of", "above", "below")

# Prompts and templates that prompt-learning methods feed the text tower; their words must be known.
METHOD_TEXTS: tuple[str, ...] = ("a photo of a X.", "X X X X X X X X X X X X X X X X", "a photo of a {}.", "a {}.")


def article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def all_words() -> list[str]:
    """Every text fragment captions and templates can contain, for the compact embedding's vocabulary."""
    parts: list[str] = [",", ".", "a", "an", "and", "that", "is", "background", "on", "with", "shape", "object"]
    for group in (SHAPES, COLOURS, PATTERNS, SIZES, BACKGROUNDS):
        for v in group:
            parts.extend(v.words)
    for phrases in (*PATTERN_PHRASES, *POSITION_PHRASES.values(), RELATIONS):
        parts.extend(phrases)
    parts.extend(f.replace("{a}", "").replace("{d}", "").replace("{p}", "") for f in (*FRAMES, *PAIR_FRAMES))
    parts.extend(t.replace("{}", "") for t in METHOD_TEXTS)
    return parts
