"""The generator: a pure function of (seed, index), covering every attribute, with captions that say true things."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pytest

from restore.clip.tokenizer import tokenize
from restore.world import lexicon as L
from restore.world.generator import WorldConfig, generate, render, sample_scene, sample_scenes
from restore.world.world_clip import world_vocabulary

CFG = WorldConfig(image_size=48)


@pytest.fixture(scope="module")
def big():
    return generate(7, range(2000), CFG)


def test_same_seed_same_pairs_different_seed_different():
    a = generate(3, range(40), CFG)
    b = generate(3, range(40), CFG)
    c = generate(4, range(40), CFG)
    assert np.array_equal(a.images, b.images) and a.captions == b.captions
    assert not np.array_equal(a.images, c.images)
    assert sum(x != y for x, y in zip(a.captions, c.captions, strict=True)) > 30


def test_an_index_is_the_same_alone_as_in_any_batch():
    batch = generate(5, range(100, 132), CFG)
    shifted = generate(5, range(90, 140), CFG)
    assert np.array_equal(batch.images, shifted.images[10:42])
    for k, i in enumerate(range(100, 132)):
        alone = sample_scene(5, i, CFG)
        assert alone.caption == batch.captions[k]
        assert np.array_equal(render([alone], 48)[0], batch.images[k])


def test_every_attribute_value_occurs(big):
    objs = [o for sc in big.scenes for o in sc.objects]
    assert {o.shape for o in objs} == set(range(len(L.SHAPES))) and len(L.SHAPES) >= 10
    assert {o.colour for o in objs} == set(range(len(L.COLOURS))) and len(L.COLOURS) >= 10
    assert {o.pattern for o in objs} == set(range(len(L.PATTERNS))) and len(L.PATTERNS) >= 4
    assert {o.size for o in objs} == set(range(len(L.SIZES)))
    assert {o.position(48) for o in objs} == set(L.POSITION_PHRASES)
    assert {sc.background for sc in big.scenes} == set(range(len(L.BACKGROUNDS)))
    counts = Counter(len(sc.objects) for sc in big.scenes)
    assert 0.15 < counts[2] / len(big.scenes) < 0.25  # two_object_prob 0.2


def test_no_object_is_drawn_on_a_background_it_would_vanish_into(big):
    for sc in big.scenes:
        for o in sc.objects:
            assert L.BACKGROUNDS[sc.background].name not in L.CLASHES.get(L.COLOURS[o.colour].name, ())


def test_captions_vary_in_frame_order_and_synonyms(big):
    text = "\n".join(big.captions)
    for frame in ("a photo of", "an image of", "a picture of", "a drawing of", "there is", "this is"):
        assert frame in text
    for synonym in ("grey", "gray", "violet", "purple", "disc", "rhombus", "chequered", "hollow", "big", "tiny"):
        assert re.search(rf"\b{synonym}\b", text), synonym
    assert "red striped" in text and "striped red" in text  # adjective order varies
    assert "with stripes" in text and "that is" in text  # postfix forms
    assert "to the left of" in text and " and " in text  # two-object captions
    assert len(set(big.captions)) > 0.9 * len(big.captions)


def _words(value: L.Value) -> list[str]:
    return list(value.words)


def test_single_object_captions_mention_exactly_what_the_record_says(big):
    checked = 0
    for sc in big.scenes:
        if len(sc.objects) != 1:
            continue
        o, m = sc.objects[0], sc.mentions
        text = re.sub(r"on a \w+ background", "", sc.caption)  # "white background" is not a colour
        has = {
            "colour": any(re.search(rf"\b{w}\b", text) for c in L.COLOURS for w in c.words),
            "size": any(re.search(rf"\b{w}\b", text) for s in L.SIZES for w in s.words),
        }
        assert has["colour"] == m.colour[0], sc.caption
        assert has["size"] == m.size[0], sc.caption
        if m.colour[0]:
            assert any(re.search(rf"\b{w}\b", text) for w in _words(L.COLOURS[o.colour])), sc.caption
        assert any(w in sc.caption for w in _words(L.SHAPES[o.shape])), sc.caption
        if m.pattern[0] and o.pattern:
            assert any(w in sc.caption for w in (*L.PATTERNS[o.pattern].words, *L.PATTERN_PHRASES[o.pattern]))
        if m.position[0]:
            assert any(p in sc.caption for p in L.POSITION_PHRASES[o.position(48)]), sc.caption
        assert m.background == ("background" in sc.caption)
        checked += 1
    assert checked > 1400


def test_captions_fit_the_context_and_the_world_vocabulary(big):
    tokens = tokenize(big.captions, context_length=32)
    used = set(tokens.unique().tolist()) - {0}
    assert used <= set(world_vocabulary())


def test_method_prompts_and_class_names_are_in_the_vocabulary():
    from restore.clip.tokenizer import encode
    from restore.world.tasks import TASKS, ZERO_SHOT_TEMPLATE

    vocab = set(world_vocabulary())
    for text in ["a photo of a", "X", ".", ZERO_SHOT_TEMPLATE.format("x")]:
        assert set(encode(text)) <= vocab, text
    for task in TASKS.values():
        for name in task.classnames:
            assert set(encode(ZERO_SHOT_TEMPLATE.format(name))) <= vocab, name


def test_a_solid_object_has_its_colour_at_its_centre_and_nothing_far_outside():
    sc = sample_scene(1, 0, CFG, fixed={"shape": 0, "pattern": 0, "size": 2})  # large solid circle
    img = render([sc], 48)[0].astype(int)
    o = sc.objects[0]
    centre = img[int(o.cy), int(o.cx)]
    assert np.abs(centre - np.array(o.rgb)).max() <= 1
    yy, xx = np.mgrid[0:48, 0:48] + 0.5
    far = np.hypot(xx - o.cx, yy - o.cy) > o.radius + 1.5
    bg = render([type(sc)([], sc.background, sc.bg_rgb, sc.bg_angle, sc.noise_seed)], 48)[0]
    assert np.array_equal(img[far], bg[far].astype(int))


def test_outlined_objects_are_hollow_and_patterns_use_two_colours():
    hollow = sample_scene(2, 0, CFG, fixed={"shape": 1, "pattern": 4, "size": 2})
    empty = type(hollow)([], hollow.background, hollow.bg_rgb, hollow.bg_angle, hollow.noise_seed)
    o = hollow.objects[0]
    assert np.array_equal(render([hollow], 48)[0][int(o.cy), int(o.cx)], render([empty], 48)[0][int(o.cy), int(o.cx)])
    for pattern in (1, 2, 3):
        sc = sample_scene(2, pattern, CFG, fixed={"shape": 1, "pattern": pattern, "size": 2})
        o = sc.objects[0]
        r = int(o.radius * 0.5)
        inner = render([sc], 48)[0][int(o.cy) - r : int(o.cy) + r, int(o.cx) - r : int(o.cx) + r].reshape(-1, 3)
        assert len(np.unique(inner, axis=0)) >= 2, L.PATTERNS[pattern].name


def test_hard_negative_groups_differ_in_exactly_one_attribute():
    cfg = WorldConfig(image_size=48, group_size=4, hard_group_prob=1.0)
    scenes = sample_scenes(11, range(200), cfg)
    varied = Counter()
    for g in range(50):
        members = [scenes[4 * g + m].objects[0] for m in range(4)]
        diffs = {k for k in ("shape", "colour", "pattern") if len({getattr(o, k) for o in members}) > 1}
        assert len(diffs) == 1
        (k,) = diffs
        assert len({getattr(o, k) for o in members}) == 4
        assert len({(o.cx, o.cy, o.size) for o in members}) == 1
        varied[k] += 1
        if k != "shape":  # the shape noun is always said; a varied colour or pattern must be too
            assert all(getattr(scenes[4 * g + m].mentions, k)[0] for m in range(4))
    assert set(varied) == {"shape", "colour", "pattern"}


def test_bad_config_is_refused():
    with pytest.raises(ValueError, match="too small"):
        WorldConfig(image_size=8)
    with pytest.raises(ValueError, match="group_size"):
        WorldConfig(group_size=0)


def test_colour_mention_changes_captions_but_not_images():
    often = generate(9, range(600), WorldConfig(colour_mention=0.85))
    rarely = generate(9, range(600), WorldConfig(colour_mention=0.3))
    assert np.array_equal(often.images, rarely.images)
    said = [sum(sc.mentions.colour[0] for sc in b.scenes) / len(b.scenes) for b in (often, rarely)]
    assert said[0] == pytest.approx(0.85, abs=0.05) and said[1] == pytest.approx(0.3, abs=0.05)


def test_easy_scenes_are_one_plain_solid_object_and_leave_other_streams_alone():
    easy = sample_scenes(4, range(300), WorldConfig(easy_prob=1.0))
    for sc in easy:
        (o,) = sc.objects
        assert o.pattern == 0 and o.size >= 1 and L.BACKGROUNDS[sc.background].name in ("dark", "light")
    assert [s.caption for s in sample_scenes(4, range(50), WorldConfig(easy_prob=0.0))] == [
        s.caption for s in sample_scenes(4, range(50))
    ]
