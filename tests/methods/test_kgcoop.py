"""KgCoOp's knowledge guidance against trainers/kgcoop.py: w * (1 - mean_i cos(w_i, w_i^clip)), with the
frozen CLIP's features of KgCoOp's per-dataset template."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from restore.clip import tokenize
from restore.methods import build_method, make_config
from tests.methods.conftest import CLASSNAMES, train_steps


def frozen_template_features(clip, template: str) -> torch.Tensor:
    names = [c.replace("_", " ") for c in CLASSNAMES]
    with torch.no_grad():
        f = clip.encode_text(tokenize([template.format(n) for n in names]))
    return f / f.norm(dim=-1, keepdim=True)


def kg_term(method, images, labels) -> tuple[float, torch.Tensor]:
    method.train()
    out = method(images)
    _, logs = method.compute_loss(out, labels)
    return logs["kg"], out.text_features.detach()


def test_zero_at_initialisation_when_the_context_is_the_teachers_words(tiny_clip, images, labels):
    # ctx_init "a photo of a" + "{class}." is token for token the teacher's "a photo of a {}."
    method = build_method("kgcoop", tiny_clip, CLASSNAMES)
    kg, text = kg_term(method, images, labels)
    assert kg == pytest.approx(0.0, abs=1e-5)
    torch.testing.assert_close(text, frozen_template_features(tiny_clip, "a photo of a {}."), rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    ("dataset", "template"),
    [
        (None, "a photo of a {}."),
        ("OxfordPets", "a photo of a {}, a type of pet."),
        # KgCoOp's own table differs from CoOp's ("{} texture.") for DTD.
        ("DescribableTextures", "a photo of a {}, a type of texture."),
    ],
)
def test_term_equals_weighted_one_minus_mean_cosine(dataset, template, tiny_clip, images, labels):
    torch.manual_seed(0)
    method = build_method("kgcoop", tiny_clip, CLASSNAMES, dataset=dataset)
    train_steps(method, images, labels, steps=2, lr=1e-2)
    kg, text = kg_term(method, images, labels)
    ref = frozen_template_features(tiny_clip, template)
    expected = 8.0 * (1.0 - F.cosine_similarity(text, ref, dim=1).mean())
    assert kg == pytest.approx(float(expected), rel=1e-5, abs=1e-7)
    assert kg > 1e-4


def test_weight_and_template_are_settable(tiny_clip, images, labels):
    config = make_config("kgcoop", {"weight": 2.0, "template": "a drawing of a {}."})
    method = build_method(config, tiny_clip, CLASSNAMES, dataset="OxfordPets")
    kg, text = kg_term(method, images, labels)
    ref = frozen_template_features(tiny_clip, "a drawing of a {}.")
    assert kg == pytest.approx(float(2.0 * (1.0 - F.cosine_similarity(text, ref, dim=1).mean())), rel=1e-5)
