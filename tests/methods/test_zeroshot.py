"""Zero-shot CLIP through the method path (build_method, class_features, predict) equals the backbone's own
zero-shot path (class_text_features + CLIP.logits), for one template and for an ensemble."""

from __future__ import annotations

import pytest
import torch

from restore.clip.templates import ensemble, single_template
from restore.clip.text_classifier import class_text_features, topk_correct
from restore.methods import build_method, make_config
from tests.methods.conftest import CLASSNAMES


@pytest.fixture
def many_images() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(11)
    return torch.randn(20, 3, 32, 32, generator=g), torch.randint(0, len(CLASSNAMES), (20,), generator=g)


@pytest.mark.parametrize(
    ("setting", "dataset", "n_templates"),
    [("single", "OxfordPets", 1), ("ensemble", "DescribableTextures", 8), ("a drawing of a {}.", None, 1)],
)
def test_method_path_equals_backbone_path(setting, dataset, n_templates, tiny_clip, many_images):
    images, labels = many_images
    method = build_method(make_config("zeroshot", {"templates": setting}), tiny_clip, CLASSNAMES, dataset)
    templates = {"single": (single_template(dataset),), "ensemble": ensemble(dataset)}.get(setting, (setting,))
    assert len(templates) == n_templates and method.n_templates == n_templates
    with torch.no_grad():
        ours = method.predict(images, method.class_features())
        via_forward = method.predict(images)
        ref = tiny_clip.logits(tiny_clip.encode_image(images), class_text_features(tiny_clip, CLASSNAMES, templates))
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(via_forward, ref, rtol=1e-5, atol=1e-5)
    assert torch.equal(ours.argmax(1), ref.argmax(1))
    assert topk_correct(ours, labels) == topk_correct(ref, labels)
    assert len(set(ref.argmax(1).tolist())) > 1  # the comparison is not between two constant predictions


def test_ensemble_is_not_the_single_template(tiny_clip):
    single = build_method("zeroshot", tiny_clip, CLASSNAMES, dataset="DescribableTextures").class_features()
    ens = build_method(make_config("zeroshot", {"templates": "ensemble"}), tiny_clip, CLASSNAMES, "DescribableTextures")
    assert not torch.allclose(single, ens.class_features())


def test_zero_shot_template_follows_the_test_dataset(tiny_clip):
    """Cross-dataset evaluation: the CoOp zero-shot baseline uses each target dataset's own template."""
    from restore.clip.templates import COOP_TEMPLATES

    method = build_method("zeroshot", tiny_clip, ["banded", "dotted"], "DescribableTextures")
    assert method.text.templates == (COOP_TEMPLATES["DescribableTextures"],)
    method.set_classes(["forest", "river"], dataset="EuroSAT")
    assert method.text.templates == (COOP_TEMPLATES["EuroSAT"],)
    expected = class_text_features(tiny_clip, ["forest", "river"], [COOP_TEMPLATES["EuroSAT"]])
    assert torch.allclose(method.class_features(), expected, atol=1e-6)
