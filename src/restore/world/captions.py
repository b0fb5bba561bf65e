"""Captions for scenes: several frames, word orders and synonyms, and a record of what each one says.

The record (`Mentions`) lets pretraining tell which other images in a batch a caption also describes ("a red
circle" fits every red circle, striped or not), so those pairs are not pushed apart as negatives.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from restore.world import lexicon as L

if TYPE_CHECKING:
    from restore.world.generator import Draws, Obj

# How often a caption mentions each attribute of a single object.
P_COLOUR, P_PATTERN, P_SOLID, P_SIZE, P_POSITION, P_BACKGROUND = 0.85, 0.7, 0.3, 0.35, 0.3, 0.25


@dataclass
class Mentions:
    """Which attributes a caption states, per object slot (slot order of the scene, not of the words)."""

    colour: list[bool] = field(default_factory=lambda: [False, False])
    pattern: list[bool] = field(default_factory=lambda: [False, False])
    size: list[bool] = field(default_factory=lambda: [False, False])
    position: list[bool] = field(default_factory=lambda: [False, False])
    background: bool = False


def _word(rng: Draws, value: L.Value, p_canonical: float = 0.7) -> str:
    if len(value.words) == 1 or rng.random() < p_canonical:
        return value.name
    return value.words[1 + rng.integers(len(value.words) - 1)]


def _pick(rng: Draws, options: tuple[str, ...]) -> str:
    return options[rng.integers(len(options))]


def _article(rng: Draws, first_word: str) -> str:
    # Mostly grammatical; sometimes "a" regardless, as prompt templates ("a photo of a {}.") write it.
    return L.article(first_word) if rng.random() < 0.8 else "a"


def _adjectives(
    rng: Draws, obj: Obj, m: Mentions, slot: int, size: bool, p_colour: float = P_COLOUR
) -> tuple[list[str], str]:
    """Adjectives before the noun and an optional postfix phrase; records the mentions."""
    words: list[str] = []
    postfix = ""
    if size and rng.random() < P_SIZE:
        words.append(_word(rng, L.SIZES[obj.size]))
        m.size[slot] = True
    middle: list[str] = []
    if rng.random() < p_colour:
        middle.append(_word(rng, L.COLOURS[obj.colour]))
        m.colour[slot] = True
    solid = obj.pattern == 0
    if rng.random() < (P_SOLID if solid else P_PATTERN):
        m.pattern[slot] = True
        phrases = L.PATTERN_PHRASES[obj.pattern]
        if phrases and rng.random() < 0.3:
            postfix = _pick(rng, phrases)
        else:
            middle.insert(rng.integers(len(middle) + 1), _word(rng, L.PATTERNS[obj.pattern]))
    return words + middle, postfix


def describe_single(
    rng: Draws, obj: Obj, image_size: int, background: int, force: str | None = None, p_colour: float = P_COLOUR
) -> tuple[str, Mentions]:
    """A caption of a one-object scene; ``force`` ("shape"|"colour"|"pattern") must be stated."""
    m = Mentions()
    for _ in range(8):  # redraw until the forced attribute is stated
        m = Mentions()
        adjectives, postfix = _adjectives(rng, obj, m, 0, size=True, p_colour=p_colour)
        if force == "colour" and not m.colour[0]:
            continue
        if force == "pattern" and not m.pattern[0]:
            continue
        break
    else:
        m = Mentions()
        adjectives = [_word(rng, L.COLOURS[obj.colour] if force == "colour" else L.PATTERNS[obj.pattern])]
        postfix = ""
        setattr(m, str(force), [True, False])
    noun = _word(rng, L.SHAPES[obj.shape])
    if adjectives and m.colour[0] and rng.random() < 0.1:
        # "a circle that is red": move the colour after the noun
        colour_word = next(w for w in adjectives if w in L.COLOURS[obj.colour].words)
        adjectives.remove(colour_word)
        desc = " ".join([*adjectives, noun, "that is", colour_word])
    else:
        desc = " ".join([*adjectives, noun])
    if postfix:
        desc += " " + postfix
    frame = _pick(rng, L.FRAMES)
    text = frame.format(a=_article(rng, desc.split()[0]), d=desc)
    tails: list[str] = []
    if rng.random() < P_POSITION:
        tails.append(_pick(rng, L.POSITION_PHRASES[obj.position(image_size)]))
        m.position[0] = True
    if rng.random() < P_BACKGROUND:
        tails.append(f"on a {_word(rng, L.BACKGROUNDS[background])} background")
        m.background = True
    if len(tails) == 2 and rng.random() < 0.5:
        tails.reverse()
    text = " ".join([text, *tails])
    return (text + "." if rng.random() < 0.7 else text), m


def describe_pair(
    rng: Draws, objs: list[Obj], layout: str, background: int, p_colour: float = P_COLOUR
) -> tuple[str, Mentions]:
    """A caption of a two-object scene: "a red circle and a blue square", or with a spatial relation."""
    m = Mentions()
    descs = []
    for slot, obj in enumerate(objs):
        adjectives, _ = _adjectives(rng, obj, m, slot, size=False, p_colour=p_colour)
        d = " ".join([*adjectives, _word(rng, L.SHAPES[obj.shape])])
        descs.append(f"{_article(rng, d.split()[0])} {d}")
    first, second = descs
    r = rng.random()
    if r < 0.35:
        rel = "to the left of" if layout == "horizontal" else "above"
        phrase = f"{first} {rel} {second}"
    elif r < 0.5:
        rel = "to the right of" if layout == "horizontal" else "below"
        phrase = f"{second} {rel} {first}"
    elif r < 0.75:
        phrase = f"{first} and {second}"
    else:
        phrase = f"{second} and {first}"
    text = _pick(rng, L.PAIR_FRAMES).format(p=phrase)
    if rng.random() < P_BACKGROUND:
        text += f" on a {_word(rng, L.BACKGROUNDS[background])} background"
        m.background = True
    return (text + "." if rng.random() < 0.7 else text), m
