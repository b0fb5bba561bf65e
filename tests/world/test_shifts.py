"""Rendering shifts: each knob changes pixel statistics the way its docstring says, and nothing else."""

from __future__ import annotations

import colorsys

import numpy as np
import pytest

from restore.world.shifts import Shift


def _images(n: int = 3, s: int = 12, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, s, s, 3), dtype=np.uint8)


def _keys(n: int) -> np.ndarray:
    return np.arange(1, n + 1, dtype=np.uint64) * np.uint64(7919)


def test_the_identity_shift_returns_the_pixels_unchanged():
    x = _images()
    assert Shift().is_identity
    assert Shift().apply(x, _keys(3)) is x
    assert Shift().describe() == "none"


def test_hue_rotation_moves_the_hue_and_keeps_greys():
    red = np.empty((1, 4, 4, 3), np.uint8)
    red[...] = (180, 80, 80)  # inside the gamut, so no channel clips after the turn
    grey = np.full((1, 4, 4, 3), 128, np.uint8)
    for degrees in (30, 60, -30):
        out = Shift(hue=degrees).apply(np.concatenate([red, grey]), _keys(2))
        assert np.array_equal(out[1], grey[0])  # achromatic pixels have no hue to rotate
        h_in = colorsys.rgb_to_hsv(*(red[0, 0, 0] / 255))[0]
        h_out = colorsys.rgb_to_hsv(*(out[0, 0, 0] / 255.0))[0]
        moved = (h_out - h_in + 0.5) % 1.0 - 0.5  # signed turn in [-0.5, 0.5)
        assert np.sign(moved) == np.sign(degrees)  # + turns red towards orange, - towards magenta
        assert 0.5 * abs(degrees) / 360 < abs(moved) < 1.5 * abs(degrees) / 360


def test_hue_rotations_compose_and_invert():
    x = np.random.default_rng(1).integers(90, 170, size=(2, 8, 8, 3), dtype=np.uint8)  # in gamut after a turn
    back = Shift(hue=-40).apply(Shift(hue=40).apply(x, _keys(2)), _keys(2))
    assert np.abs(back.astype(int) - x.astype(int)).max() <= 1  # two roundings


def test_lowres_is_blockwise_constant_and_keeps_block_means():
    x = _images(n=2, s=12)
    out = Shift(lowres=3).apply(x, _keys(2)).astype(float)
    blocks = out.reshape(2, 4, 3, 4, 3, 3)
    assert np.all(blocks == blocks[:, :, :1, :, :1, :])
    means = x.astype(float).reshape(2, 4, 3, 4, 3, 3).mean(axis=(2, 4))
    assert np.abs(blocks[:, :, 0, :, 0, :] - means).max() <= 0.5


def test_contrast_pulls_towards_the_image_mean():
    x = _images(n=2, s=8)
    out = Shift(contrast=0.25).apply(x, _keys(2)).astype(float)
    xf = x.astype(float)
    mean = xf.mean(axis=(1, 2, 3), keepdims=True)
    assert np.abs(out - (mean + 0.25 * (xf - mean))).max() <= 0.5
    assert out.std() < 0.3 * xf.std()


def test_noise_is_a_pure_function_of_the_image_key_and_bounded():
    x = np.full((3, 8, 8, 3), 128, np.uint8)
    keys = _keys(3)
    a = Shift(noise=20).apply(x, keys)
    assert np.array_equal(a, Shift(noise=20).apply(x, keys))
    assert np.abs(a.astype(int) - 128).max() <= 20
    assert not np.array_equal(a[0], a[1])  # each image its own noise
    b = Shift(noise=20).apply(x[1:2], keys[1:2])  # ...the same whichever batch it is rendered in
    assert np.array_equal(a[1], b[0])


def test_a_quarter_turn_of_the_camera_rotates_the_image():
    x = np.zeros((1, 8, 8, 3), np.uint8)
    x[0, 1, 6] = 255  # one bright pixel near the top right corner
    out = Shift(rotate=90).apply(x, _keys(1))
    r, c = np.unravel_index(out[0, ..., 0].argmax(), (8, 8))
    assert (r, c) in {(1, 1), (6, 6)}  # a quarter turn moves it to the adjacent corner (either direction)
    assert out[0, 1, 6, 0] < 64


@pytest.mark.parametrize("kwargs", [{"lowres": 0}, {"blur": 2}, {"contrast": 0.0}, {"contrast": 1.5}, {"noise": -1.0}])
def test_invalid_shifts_are_refused(kwargs):
    with pytest.raises(ValueError):
        Shift(**kwargs)
