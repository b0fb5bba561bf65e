"""Shift profiles and the paper's figures."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from restore.analysis.plots import GainPoint, TsnePanel, plot_discrepancy_vs_gain, plot_layer_shifts, plot_tsne
from restore.analysis.shift import ShiftProfile, measure_shifts
from restore.clip import build_model, get_config
from restore.methods import build_method, make_config

CLASSES = ["red circle", "blue square", "green triangle"]


@pytest.fixture
def clip():
    torch.manual_seed(0)
    return build_model(get_config("tiny"))


def test_profile_matches_the_training_measurement(clip):
    method = build_method(make_config("restore_m", {"surgery": "none"}), clip, CLASSES)
    images = torch.randn(6, 3, 32, 32)
    method.train()
    out = method(images)
    vision, text = method.shift_measure(out)
    # the same images in two batches of 3: a size-weighted mean of batch means is the mean over all images
    profile = measure_shifts(method, [images[:3], images[3:]])
    assert profile.images == 6
    for layer in range(3):
        assert profile.vision[layer] == pytest.approx(float(vision[layer]), rel=1e-5)
        assert profile.text[layer] == pytest.approx(float(text[layer]), rel=1e-5)
    d = profile.to_dict()
    assert d["total_discrepancy"] == pytest.approx(
        sum((a - b) ** 2 for a, b in zip(d["vision"], d["text"], strict=True))
    )
    assert ShiftProfile.from_dict(d) == profile
    assert method.training  # the mode is restored


def test_zero_shot_has_no_shift(clip):
    method = build_method("zeroshot", clip, CLASSES)
    profile = measure_shifts(method, [torch.randn(2, 3, 32, 32)])
    assert profile.vision == [0.0] * 3 and profile.text == [0.0] * 3 and sum(profile.discrepancy) == 0.0


def test_vision_only_method_has_text_shift_zero(clip):
    method = build_method("vpt", clip, CLASSES)
    profile = measure_shifts(method, [torch.randn(2, 3, 32, 32)])
    assert all(v > 0 for v in profile.vision) and profile.text == [0.0] * 3


def _is_png_with_content(path) -> bool:
    with Image.open(path) as im:
        arr = np.asarray(im.convert("L"), dtype=float)
    return im.format == "PNG" and arr.std() > 5


def test_figures_are_written(tmp_path, clip):
    p1 = ShiftProfile("activation/rms", [0.5, 0.4, 0.2], [0.3, 0.35, 0.1], 10)
    p2 = ShiftProfile("activation/rms", [0.9, 0.7, 0.5], [0.1, 0.1, 0.05], 10)
    a = plot_layer_shifts({"maple": p1, "vpt": p2}, tmp_path / "layers.png")
    points = [GainPoint("coop", 0.8, 10.0, -8.0), GainPoint("maple", 0.2, 12.0, 1.0), GainPoint("restore", 0.05, 13, 3)]
    b = plot_discrepancy_vs_gain(points, tmp_path / "gain.png")
    rng = np.random.default_rng(0)
    panel = TsnePanel("maple / base", rng.normal(size=(30, 8)), np.arange(30) % 3, rng.normal(size=(3, 8)))
    c = plot_tsne([panel], tmp_path / "tsne.png")
    for path in (a, b, c):
        assert _is_png_with_content(path)


def test_tsne_has_a_class_legend_and_readable_markers():
    from restore.analysis.plots import TSNE_LEGEND_CLASSES, tsne_figure

    rng = np.random.default_rng(0)
    names = ["banded", "dotted", "striped"]
    panel = TsnePanel("maple / base", rng.normal(size=(30, 8)), np.arange(30) % 3, rng.normal(size=(3, 8)), names)
    fig = tsne_figure([panel])
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == ["image", "class text", *names]
    images, texts = fig.axes[0].collections
    assert images.get_sizes()[0] >= 20 and texts.get_sizes()[0] >= 200  # dots and stars big enough to read
    from matplotlib.colors import to_rgba

    for c, handle in enumerate(legend.legend_handles[2:]):  # a class's legend colour is its star's colour
        assert to_rgba(handle.get_color()) == pytest.approx(tuple(texts.get_facecolors()[c]))

    many = TsnePanel("coop / novel", rng.normal(size=(50, 8)), np.arange(50) % 25, rng.normal(size=(25, 8)))
    labels = [t.get_text() for t in tsne_figure([many]).legends[0].get_texts()]
    assert labels[2:4] == ["class 0", "class 1"] and len(labels) == 2 + TSNE_LEGEND_CLASSES + 1
    assert labels[-1] == "+5 more classes (colours repeat)"


def test_analyze_summary_prints_signed_rounded_gains_not_dicts():
    from restore.engine.analyze_runs import summary_lines

    shift = {"total_vision": 0.123456, "total_text": 0.05, "total_discrepancy": 0.0012345}
    result = {
        "runs": [
            {"method": "maple", "seed": 1, "shift": shift, "gain_over_zero_shot": {"base": -1.6666666666666679,
                                                                                  "novel": 2.5}},
            {"method": "restore_m", "seed": 2, "shift": shift, "gain_over_zero_shot": {}},
        ]
    }  # fmt: skip
    first, second = summary_lines(result)
    assert first == (
        "maple      seed 1:  Σ s_v 0.1235  Σ s_t 0.0500  discrepancy 0.0012  "
        "gain over zero-shot (points): base -1.67, novel +2.50"
    )
    assert second.endswith("gain over zero-shot (points): n/a (no zero-shot accuracy)")
    assert "{" not in first + second
