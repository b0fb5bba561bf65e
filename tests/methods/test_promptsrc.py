"""PromptSRC against trainers/promptsrc.py: the self-consistency losses computed independently here, and
Gaussian prompt aggregation (GPA) against a weighted average of the prompts recorded after each epoch."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from restore.clip import tokenize
from restore.clip.templates import PROMPTSRC_60
from restore.methods import build_method, make_config
from restore.methods.promptsrc import gaussian_weights
from tests.methods.conftest import CLASSNAMES, sgd, train_steps

# CLIP's EuroSAT ensemble (data/prompts.md): a three-template teacher keeps the test fast.
EUROSAT = tuple(f"a centered satellite photo of {article}{{}}." for article in ("", "a ", "the "))
ONE_TEMPLATE = {"teacher_templates": "a photo of a {}."}


def gauss(epochs: int, mean: float, std: float) -> torch.Tensor:
    """Normalised N(mean, std) densities at epochs 1..N, as the trainer's get_gauss and self.gauss."""
    normal = torch.distributions.Normal(torch.tensor(mean, dtype=torch.float64), torch.tensor(std, dtype=torch.float64))
    dens = normal.log_prob(torch.arange(1, epochs + 1, dtype=torch.float64)).exp()
    return dens / dens.sum()


def test_default_teacher_is_the_60_template_ensemble_averaged_before_normalising(tiny_clip):
    method = build_method("promptsrc", tiny_clip, CLASSNAMES, dataset="EuroSAT")
    (term,) = method.losses
    assert term.teacher.templates == PROMPTSRC_60 and term.teacher.mode == "raw_mean"
    assert (term.text_weight, term.image_weight, term.kl_weight) == (25.0, 10.0, 1.0)


def test_loss_terms_equal_the_trainers_formulas(tiny_clip, images, labels):
    torch.manual_seed(0)
    config = make_config("promptsrc", {"teacher_templates": "ensemble"})
    method = build_method(config, tiny_clip, CLASSNAMES, dataset="EuroSAT")
    train_steps(method, images, labels, steps=2, lr=1e-2)  # move the prompts away from their initialisation
    out = method(images)
    total, logs = method.compute_loss(out, labels)

    with torch.no_grad():
        names = [c.replace("_", " ") for c in CLASSNAMES]
        raw = torch.stack([tiny_clip.encode_text(tokenize([t.format(n) for n in names])) for t in EUROSAT])
        fixed = raw.mean(0)  # the trainer averages unnormalised teacher features, then normalises
        fixed = fixed / fixed.norm(dim=-1, keepdim=True)
        zs = tiny_clip.encode_image(images)
        zs = zs / zs.norm(dim=-1, keepdim=True)
        zs_logits = tiny_clip.logit_scale.exp() * zs @ fixed.t()
        logits = out.logits.detach()
        expected = {
            "ce": F.cross_entropy(logits, labels),
            "scl_text": (out.text_features - fixed).abs().mean() * 25,
            "scl_image": (out.image_features - zs).abs().mean() * 10,
            # KL(zero-shot || prompted) of the softmax, summed, over the logits' size
            "scl_logits": (zs_logits.softmax(1) * (zs_logits.log_softmax(1) - logits.log_softmax(1))).sum()
            / logits.numel(),
        }
    assert set(logs) == set(expected)
    for k, v in expected.items():
        assert logs[k] == pytest.approx(float(v), rel=1e-5, abs=1e-8), k
    assert all(logs[k] > 0 for k in expected)
    assert float(total.detach()) == pytest.approx(sum(float(v) for v in expected.values()), rel=1e-6)


def test_gaussian_weights_are_the_normalised_density():
    for epochs, mean, std in [(20, 15, 1), (20, 6, 10), (50, 30, 30), (5, 15, 1)]:
        ours = torch.tensor(gaussian_weights(epochs, mean, std), dtype=torch.float64)
        torch.testing.assert_close(ours, gauss(epochs, mean, std), rtol=1e-9, atol=1e-12)


def test_default_mean_is_the_released_15_of_20_epochs(tiny_clip):
    method = build_method(make_config("promptsrc", ONE_TEMPLATE), tiny_clip, CLASSNAMES)
    weights = torch.tensor(method.aggregation.weights(20), dtype=torch.float64)
    torch.testing.assert_close(weights, gauss(20, 15, 1), rtol=1e-9, atol=1e-12)  # GPA_MEAN 15, GPA_STD 1


def run_epochs(method, images, labels, epochs: int, steps: int = 2) -> list[dict[str, torch.Tensor]]:
    """Train ``epochs`` short epochs; record the learnable state at each epoch's end, then end the epoch."""
    opt = sgd(method, 1e-2)
    snapshots = []
    for epoch in range(1, epochs + 1):
        train_steps(method, images, labels, steps=steps, lr=1e-2, opt=opt)
        snapshots.append(method.learnable_state_dict())
        method.end_epoch(epoch, epochs)
        if epoch < epochs:  # aggregation only accumulates until the last epoch
            for k, v in method.learnable_state_dict().items():
                assert torch.equal(v, snapshots[-1][k])
    return snapshots


@pytest.mark.parametrize("settings", [{}, {"gpa_mean": 2.0, "gpa_std": 0.5}])
def test_aggregated_prompts_are_the_gaussian_average_of_the_epochs(settings, tiny_clip, images, labels):
    torch.manual_seed(0)
    method = build_method(make_config("promptsrc", {**ONE_TEMPLATE, **settings}), tiny_clip, CLASSNAMES)
    snapshots = run_epochs(method, images, labels, epochs=3)
    w = gauss(3, settings.get("gpa_mean", 0.75 * 3), settings.get("gpa_std", 1.0))
    final = method.learnable_state_dict()
    assert set(final) == set(snapshots[0])
    for k, v in final.items():
        expected = sum(w[i] * snapshots[i][k].double() for i in range(3))
        torch.testing.assert_close(v.double(), expected, rtol=1e-6, atol=1e-7)
        assert not torch.allclose(v, snapshots[-1][k])  # the average is not the last epoch's prompts


def test_without_gpa_the_last_epoch_is_kept(tiny_clip, images, labels):
    torch.manual_seed(0)
    method = build_method(make_config("promptsrc", {**ONE_TEMPLATE, "gpa": False}), tiny_clip, CLASSNAMES)
    snapshots = run_epochs(method, images, labels, epochs=2)
    for k, v in method.learnable_state_dict().items():
        assert torch.equal(v, snapshots[-1][k])


def test_gpa_accumulator_survives_a_resume_and_epochs_count_from_one(tiny_clip, images, labels):
    torch.manual_seed(0)
    config = make_config("promptsrc", ONE_TEMPLATE)
    a = build_method(config, tiny_clip, CLASSNAMES)
    opt = sgd(a, 1e-2)
    for epoch in (1, 2):
        train_steps(a, images, labels, steps=1, lr=1e-2, opt=opt)
        a.end_epoch(epoch, 3)
    b = build_method(config, tiny_clip, CLASSNAMES)
    b.load_learnable_state_dict(a.learnable_state_dict())
    b.load_training_state(a.training_state())
    a.end_epoch(3, 3)
    b.end_epoch(3, 3)
    for k, v in a.learnable_state_dict().items():
        assert torch.equal(b.learnable_state_dict()[k], v)
    with pytest.raises(ValueError, match="epochs count from 1"):
        b.end_epoch(0, 3)
