"""RESTORE: the feature-shift loss against independent computations, surgery ratios, and its variants."""

from __future__ import annotations

import pytest
import torch

from restore.clip import ShiftRequest, build_model, get_config
from restore.methods import build_method, make_config
from restore.methods.feature_shift import activation_shifts, consistency_loss, gram_norm
from tests.reference_shift import reference_text, reference_vision

CLASSES = ["red circle", "blue square", "green triangle", "yellow star"]


@pytest.fixture
def clip():
    torch.manual_seed(0)
    return build_model(get_config("tiny"))


def restore_m(clip, **values):
    return build_method(make_config("restore_m", values), clip, CLASSES, "DescribableTextures")


def batch(n=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 32, 32, generator=g), torch.arange(n) % len(CLASSES)


def independent_fs(method, images):
    """L_fs from prompts removed and blocks re-run (tests/reference_shift.py), with the per-token rms magnitude."""
    text = method.text.layer_prompts()
    vision = method.vision.layer_prompts(text)
    _, v_ms = reference_vision(method.clip, images, vision)
    _, t_ms = reference_text(method.clip, method.tokens[:, :], text)
    s_v = [ms.sqrt().mean() for ms in v_ms]
    s_t = [ms.sqrt().mean() for ms in t_ms]
    return sum((a - b) ** 2 for a, b in zip(s_v, s_t, strict=True)), s_v, s_t


def test_activation_fs_loss_equals_independent_computation(clip):
    method = restore_m(clip, surgery="none", fs_weight=1.0).train()
    images, labels = batch()
    out = method(images)
    _, parts = method.compute_loss(out, labels)
    ref, s_v, s_t = independent_fs(method, images)
    assert parts["fs"] == pytest.approx(float(ref.detach()), rel=1e-5)
    vision, text = out.measured["shift"]
    assert sorted(vision) == sorted(text) == [0, 1, 2]  # depth 9 capped at the tiny model's 3 layers
    for layer in range(3):
        assert float(vision[layer].detach()) == pytest.approx(float(s_v[layer].detach()), rel=1e-5)
        assert float(text[layer].detach()) == pytest.approx(float(s_t[layer].detach()), rel=1e-5)


def test_fs_weight_scales_the_term(clip):
    images, labels = batch()
    a = restore_m(clip, surgery="none", fs_weight=1.0).train()
    b = restore_m(clip, surgery="none", fs_weight=0.5).train()
    b.load_learnable_state_dict(a.learnable_state_dict())
    fa = a.compute_loss(a(images), labels)[1]["fs"]
    fb = b.compute_loss(b(images), labels)[1]["fs"]
    assert fb == pytest.approx(0.5 * fa, rel=1e-6)


def test_parameter_measure_follows_the_released_formula(clip):
    method = restore_m(clip, surgery="none", fs_weight=1.0, shift_measure="parameter").train()
    text0 = [p.detach().clone() for p in method.text.layer_prompts()]
    vision0 = [p.detach().clone() for p in method.vision.layer_prompts(text0)]
    images, labels = batch()
    # at the first step every prompt equals its initial value: every s_l is 1, L_fs is 0
    assert method.compute_loss(method(images), labels)[1]["fs"] == pytest.approx(0.0, abs=1e-10)
    with torch.no_grad():
        method.text.ctx.mul_(1.7)
        method.text.deep[0].add_(0.3)
    text = method.text.layer_prompts()
    vision = method.vision.layer_prompts(text)

    def gram(p):
        return torch.linalg.norm(p.t() @ p)  # ‖PᵀP‖_F as the released code writes it

    ref = sum(  # the deep layers only: the released loss never compares layer 0 (ctx against proj(ctx))
        (gram(v) / gram(v0) - gram(t) / gram(t0)) ** 2
        for v, v0, t, t0 in list(zip(vision, vision0, text, text0, strict=True))[1:]
    )
    got = method.compute_loss(method(images), labels)[1]["fs"]
    assert got == pytest.approx(float(ref.detach()), rel=1e-5)
    assert float(gram_norm(text[0])) == pytest.approx(float(gram(text[0])), rel=1e-5)


def test_hidden_prompts_give_zero_shift_and_zero_loss(clip):
    method = restore_m(clip, surgery="none", fs_weight=1.0)
    method.shift_request = ShiftRequest(hide_prompts=True)
    method.train()
    images, labels = batch()
    out = method(images)
    assert all(torch.equal(s.shift_ms, torch.zeros_like(s.shift_ms)) for s in out.vision_shifts if s is not None)
    assert all(float(s.shift_ms.max()) < 1e-10 for s in out.text_shifts if s is not None)
    assert method.compute_loss(out, labels)[1]["fs"] < 1e-10


def test_no_prompts_means_no_shift():
    stats = [None, None]
    assert activation_shifts(stats) == {}
    assert float(consistency_loss({}, {})) == 0.0


def test_fs_gradients_reach_prompts_of_both_modalities(clip):
    method = restore_m(clip, surgery="none", fs_weight=1.0).train()
    images, _ = batch()
    out = method(images)
    vision, text = method.shift_measure(out)
    consistency_loss(vision, text).backward()
    text_params = [method.text.ctx, *method.text.deep]
    vision_params = [*method.vision.proj.parameters(), *method.vision.deep_proj.parameters()]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in text_params)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in vision_params)
    assert all(p.grad is None for p in clip.parameters())


def test_detached_free_branch_changes_the_gradient_not_the_value(clip):
    images, labels = batch()
    a = restore_m(clip, surgery="none", fs_weight=1.0).train()
    b = restore_m(clip, surgery="none", fs_weight=1.0, detach_free=True).train()
    b.load_learnable_state_dict(a.learnable_state_dict())
    la, pa = a.compute_loss(a(images), labels)
    lb, pb = b.compute_loss(b(images), labels)
    assert pa["fs"] == pytest.approx(pb["fs"], rel=1e-6)
    la.backward()
    lb.backward()
    assert not torch.allclose(a.text.ctx.grad, b.text.ctx.grad)


@pytest.mark.parametrize("mode", ["guided", "fixed"])
def test_alpha_follows_the_shift_only_when_guided(clip, mode):
    """Prompts pass LayerNorm before they act, so scaling them barely moves the shift; hiding them from
    attention drives it to 0 and back, which moves a guided α down and up in proportion."""
    method = restore_m(clip, surgery=mode, fs_weight=0.0, alpha_momentum=0.0).train()
    images, labels = batch()

    def step(hidden: bool) -> tuple[float, float, float, float]:
        method.shift_request = ShiftRequest(hide_prompts=hidden)
        out = method(images)
        method.compute_loss(out, labels)
        vision, text = activation_shifts(out.vision_shifts), activation_shifts(out.text_shifts)
        sv, st = float(sum(vision.values())), float(sum(text.values()))
        return float(method.image_adapter.alpha), float(method.text_adapter.alpha), sv, st

    a_v0, a_t0, sv0, _ = step(hidden=False)
    assert (a_v0, a_t0) == pytest.approx((0.15, 0.1), rel=1e-6)  # DTD's (vis_r, text_r), calibrated at step one
    a_v1, a_t1, sv1, st1 = step(hidden=True)
    assert sv1 < 1e-6 and st1 < 1e-5
    a_v2, a_t2, sv2, _ = step(hidden=False)
    assert sv2 == pytest.approx(sv0, rel=1e-5)
    if mode == "guided":
        assert a_v1 < 1e-6 and a_t1 < 1e-5  # no shift, no surgery
        assert a_v2 > a_v1 and a_t2 > a_t1  # the shift rises, α rises with it
        assert a_v2 == pytest.approx(a_v0 * sv2 / sv0, rel=1e-5)
    else:
        assert (a_v1, a_t1) == (a_v2, a_t2) == (a_v0, a_t0)


def test_alpha_is_a_moving_average_of_gamma_times_the_shift(clip):
    method = restore_m(clip, surgery="guided", fs_weight=0.0, gamma=0.02, beta=0.03, alpha_momentum=0.5).train()
    images, labels = batch()
    out = method(images)
    method.compute_loss(out, labels)
    vision, text = out.measured["shift"]
    assert float(method.image_adapter.alpha) == pytest.approx(0.5 * 0.15 + 0.5 * 0.02 * float(sum(vision.values())))
    assert float(method.text_adapter.alpha) == pytest.approx(0.5 * 0.1 + 0.5 * 0.03 * float(sum(text.values())))


def test_evaluation_runs_no_prompt_free_pass_and_is_deterministic(clip):
    method = restore_m(clip).train()
    opt = torch.optim.SGD(method.learnable_parameters(), lr=0.01)
    images, labels = batch()
    for _ in range(2):
        loss, _ = method.compute_loss(method(images), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    blocks = [*clip.visual.transformer.resblocks, *clip.transformer.resblocks]
    before = sum(b.prompt_free_calls for b in blocks)
    method.eval()
    cf = method.class_features()
    first = method.predict(images, cf)
    second = method.predict(images, method.class_features())
    assert torch.equal(first, second)
    assert torch.equal(method(images).logits, first)
    assert sum(b.prompt_free_calls for b in blocks) == before


@pytest.mark.parametrize(
    ("variant", "base"), [("restore_m", "maple"), ("restore_p", "promptsrc"), ("restore_ivlp", "ivlp")]
)
def test_variant_without_additions_is_its_base_method(clip, variant, base):
    images, labels = batch()
    models = []
    for name, values in ((variant, {"fs_weight": 0.0, "surgery": "none"}), (base, {})):
        torch.manual_seed(7)
        models.append(build_method(make_config(name, values), clip, CLASSES, "DescribableTextures").train())
    a, b = models
    assert a.learnable_state_dict().keys() == b.learnable_state_dict().keys()
    la, _ = a.compute_loss(out_a := a(images), labels)
    lb, _ = b.compute_loss(out_b := b(images), labels)
    assert torch.equal(out_a.logits, out_b.logits)
    la.backward()
    lb.backward()
    for (na, pa), (nb, pb) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        assert na == nb
        if pa.grad is not None or pb.grad is not None:
            assert torch.equal(pa.grad, pb.grad), na


def test_presets_follow_the_released_script(clip):
    for dataset, expected in [
        ("DescribableTextures", (0.15, 0.1, 0.5)),
        ("OxfordPets", (0.01, 0.1, 1.0)),
        ("ImageNet", (0.05, 0.05, 1.0)),
        ("FGVCAircraft", (0.1, 0.1, 1.0)),
    ]:
        assert make_config("restore_m").resolved(dataset) == expected
    assert make_config("restore_m", {"preset": "cross_dataset"}).resolved("ImageNet") == (0.01, 0.1, 1.0)
    assert make_config("restore_m", {"fs_weight": 2.0, "vision_ratio": 0.3}).resolved("OxfordPets") == (0.3, 0.1, 2.0)


def test_surgery_adapter_shape_and_activation(clip):
    method = restore_m(clip, surgery="fixed", surgery_activation="quickgelu")
    adapter = method.image_adapter
    assert adapter.up.out_features == 4 * clip.cfg.embed_dim
    x = torch.randn(5, clip.cfg.embed_dim)
    manual = x + adapter.alpha * adapter.down(torch.nn.functional.silu(adapter.up(adapter.ln(x)) * 1.702) / 1.702)
    assert torch.allclose(adapter(x), manual, atol=1e-6)


def test_checkpoint_keeps_alpha_and_reloads_identically(clip, tmp_path):
    from restore.methods.model_file import load_method, save_method

    method = restore_m(clip).train()
    images, labels = batch()
    method.compute_loss(method(images), labels)
    method.eval()
    path = save_method(method, tmp_path / "m.safetensors")
    again = load_method(path, clip)
    assert float(again.image_adapter.alpha) == float(method.image_adapter.alpha)
    assert torch.equal(again.predict(images, again.class_features()), method.predict(images, method.class_features()))
