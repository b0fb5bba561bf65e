"""The released RESTORE code as a recipe: the proxy's layer set, the one-time α update, the recipe switch and the
protocol-dependent presets — each checked against values computed here by hand."""

from __future__ import annotations

import math

import pytest
import torch

from restore.engine.run_config import load_run_config, resolve
from restore.engine.trainer import Trainer, TrainSettings
from restore.methods import build_method, make_config
from restore.methods.surgery import SurgeryAdapter
from tests.engine.fakes import Blobs

CLASSES = [f"class {c}" for c in "abcdef"]


def restore_m(clip, dataset="DescribableTextures", **values):
    torch.manual_seed(5)
    return build_method(make_config("restore_m", values), clip, CLASSES, dataset)


def gram(p: torch.Tensor) -> float:
    return float(torch.linalg.norm(p.t() @ p))  # ‖PᵀP‖_F as maple_fsa.py writes it


def test_parameter_proxy_measures_the_deep_layers_only(tiny_clip):
    method = restore_m(tiny_clip, recipe="released").train()
    t0 = [p.detach().clone() for p in method.text.layer_prompts()]
    v0 = [p.detach().clone() for p in method.vision.layer_prompts(t0)]
    with torch.no_grad():  # move layer 0 a lot and the deep layers a little
        method.text.ctx.mul_(5.0)
        method.vision.proj.weight.mul_(-3.0)
        method.text.deep[0].add_(0.2)
        method.text.deep[1].mul_(1.3)
    images, labels = Blobs(n=4).images, torch.arange(4)
    out = method(images)
    vision, text = method.shift_measure(out)
    assert sorted(vision) == sorted(text) == [1, 2]  # the tiny model's 3 layers; layer 0 is not compared
    t = method.text.layer_prompts()
    v = method.vision.layer_prompts(t)
    expected = sum((gram(v[i]) / gram(v0[i]) - gram(t[i]) / gram(t0[i])) ** 2 for i in (1, 2))
    parts = method.compute_loss(out, labels)[1]
    assert parts["fs"] == pytest.approx(0.5 * expected, rel=1e-5)  # λ_fs = 0.5 on DTD


def _hand_built_prompts(method, a: float, b: float, bias: torch.Tensor) -> tuple[float, float]:
    """Text deep prompts with rows (a e_0, b e_1): ‖PᵀP‖_F = sqrt(a⁴ + b⁴). Vision deep prompts: couplings with
    zero weight and bias v, so both rows are v: ‖PᵀP‖_F = 2‖v‖². Returns (text mean, vision mean)."""
    with torch.no_grad():
        for i, deep in enumerate(method.text.deep):
            deep.zero_()
            deep[0, 0], deep[1, 1] = a * (i + 1), b
        for proj in method.vision.deep_proj:
            proj.weight.zero_()
            proj.bias.copy_(bias)
    layers = len(method.text.deep)
    text_mean = sum(math.sqrt((a * (i + 1)) ** 4 + b**4) for i in range(layers)) / layers
    return text_mean, 2 * float(bias.pow(2).sum())


@pytest.mark.parametrize(("epochs", "update_after"), [(10, 4), (2, 1), (6, 3)])
def test_released_alpha_is_updated_once_after_epoch_e_div_3(tiny_clip, epochs, update_after):
    method = restore_m(tiny_clip, recipe="released").train()
    bias = torch.linspace(-1.0, 1.0, method.vision.deep_proj[0].bias.numel())
    text_mean, vision_mean = _hand_built_prompts(method, 0.7, 1.9, bias)
    seen = []
    for epoch in range(1, epochs + 1):
        method.end_epoch(epoch, epochs)
        seen.append((float(method.image_adapter.alpha), float(method.text_adapter.alpha)))
    vis, txt = 0.15 + 0.005 * vision_mean, 0.1 + 0.02 * text_mean  # DTD's vis_r, text_r
    before = [s for e, s in enumerate(seen, 1) if e < update_after]
    after = [s for e, s in enumerate(seen, 1) if e >= update_after]
    assert all(s == pytest.approx((0.15, 0.1), rel=1e-7) for s in before)
    assert all(s == pytest.approx((vis, txt), rel=1e-6) for s in after)
    assert vis != pytest.approx(0.15) and txt != pytest.approx(0.1)


def test_released_alpha_in_a_real_training_run(tiny_clip, tmp_path):
    """Through the trainer: α stays at the preset for epochs 1..3 of 9 and moves once, after epoch 4."""
    method = restore_m(tiny_clip, recipe="released")
    alphas: list[float] = []
    trainer = Trainer(
        method, Blobs(), TrainSettings(epochs=9, lr=0.0035, batch_size=8, seed=2), checkpoint=tmp_path / "last.pt",
        config_hash="h", identity={},
        on_epoch_end=lambda epoch, summary: alphas.append(float(method.text_adapter.alpha)),
    )  # fmt: skip
    trainer.fit()
    assert alphas[:3] == [pytest.approx(0.1, rel=1e-7)] * 3
    assert alphas[3] != pytest.approx(0.1) and len(set(alphas[3:])) == 1
    reloaded = torch.load(tmp_path / "last.pt", weights_only=True)["learnable"]
    assert float(reloaded["text_adapter.alpha"]) == alphas[-1]  # a resumed run keeps the updated α


RECIPE_SETTINGS = {
    "paper": ("activation", "guided", "relu"),
    "released": ("parameter", "released", "quickgelu"),
}


@pytest.mark.parametrize("recipe", ["paper", "released"])
def test_the_recipe_switch_sets_exactly_its_listed_settings(tiny_clip, recipe):
    cfg = make_config("restore_m", {"recipe": recipe}).for_run("b2n", "DescribableTextures")
    assert (cfg.shift_measure, cfg.surgery, cfg.surgery_activation) == RECIPE_SETTINGS[recipe]
    assert (cfg.preset, cfg.vision_ratio, cfg.text_ratio, cfg.fs_weight) == ("DescribableTextures", 0.15, 0.1, 0.5)
    method = restore_m(tiny_clip, recipe=recipe)
    act = method.image_adapter.act
    assert isinstance(act, torch.nn.ReLU) == (recipe == "paper")
    assert method.restore_settings["shift_measure"] == RECIPE_SETTINGS[recipe][0]
    # the paper's activation shift needs the prompt-free pass; the proxy reads parameters only
    assert (method.shift_request is not None) == (recipe == "paper")
    assert len(method.epoch_hooks) == (1 if recipe == "released" else 0)


def test_a_value_the_user_sets_wins_over_the_recipe():
    cfg = make_config("restore_m", {"recipe": "released", "surgery": "fixed", "vision_ratio": 0.3})
    cfg = cfg.for_run("b2n", "OxfordPets")
    assert (cfg.shift_measure, cfg.surgery, cfg.surgery_activation) == ("parameter", "fixed", "quickgelu")
    assert (cfg.vision_ratio, cfg.text_ratio, cfg.fs_weight) == (0.3, 0.1, 1.0)
    assert cfg.for_run("b2n", "OxfordPets") == cfg  # filling is idempotent: a reloaded config is the same


@pytest.mark.parametrize(
    ("protocol", "dataset", "row", "values"),
    [
        ("xd", "imagenet", "cross_dataset", (0.01, 0.1, 1.0)),
        ("dg", "imagenet", "cross_dataset", (0.01, 0.1, 1.0)),
        ("b2n", "imagenet", "ImageNet", (0.05, 0.05, 1.0)),
        ("b2n", "dtd", "DescribableTextures", (0.15, 0.1, 0.5)),
        ("fewshot", "eurosat", "EuroSAT", (0.01, 0.1, 1.0)),
        ("b2n", "world_shapes", "other", (0.1, 0.1, 1.0)),
    ],
)
def test_presets_depend_on_the_protocol(protocol, dataset, row, values):
    cfg = resolve(load_run_config(flags={"method": "restore_m", "protocol": protocol, "data.dataset": dataset}))
    m = cfg.method
    assert (m.preset, m.vision_ratio, m.text_ratio, m.fs_weight) == (row, *values)
    assert cfg.to_dict()["method"]["preset"] == row  # the run's config.yaml says which row ran


def test_released_few_shot_runs_use_the_script_defaults():
    """scripts/maple_fsa/main.sh passes no ratios, so train.py's defaults (0.1, 0.1, 1) ran for every dataset."""
    flags = {"method": "restore_m", "protocol": "fewshot", "data.dataset": "dtd"}
    released = resolve(load_run_config(flags=flags, overrides=["method.recipe=released"])).method
    paper = resolve(load_run_config(flags=flags)).method
    assert (released.preset, released.vision_ratio, released.text_ratio, released.fs_weight) == (
        "fewshot_script", 0.1, 0.1, 1.0,
    )
    assert (paper.preset, paper.vision_ratio, paper.fs_weight) == ("DescribableTextures", 0.15, 0.5)


def test_an_explicit_preset_wins_over_the_protocol():
    cfg = resolve(
        load_run_config(
            flags={"method": "restore_m", "protocol": "xd", "data.dataset": "imagenet"},
            overrides=["method.preset=ImageNet"],
        )
    )
    assert (cfg.method.vision_ratio, cfg.method.text_ratio) == (0.05, 0.05)


def test_adapter_set_alpha_keeps_dtype_and_device():
    adapter = SurgeryAdapter(8, 0.1)
    adapter.set_alpha(0.25)
    assert adapter.alpha.dtype == torch.float32 and float(adapter.alpha) == 0.25
    assert "alpha" in adapter.state_dict()


REPO_CONFIGS = __import__("pathlib").Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize(
    ("protocol", "dataset", "epochs", "row"),
    [("b2n", "dtd", 10, "DescribableTextures"), ("xd", None, 2, "cross_dataset"),
     ("dg", None, 2, "cross_dataset"), ("fewshot", "dtd", 10, "fewshot_script")],
)  # fmt: skip
def test_released_configs_resolve_to_the_released_run(protocol, dataset, epochs, row):
    path = REPO_CONFIGS / f"{protocol}_restore_m_released_vitb16.yaml"
    flags = {"data.dataset": dataset} if dataset else {}
    cfg = resolve(load_run_config(path, flags=flags))
    m = cfg.method
    assert (cfg.protocol, m.name, m.recipe, m.n_ctx, m.depth) == (protocol, "restore_m", "released", 2, 9)
    assert (m.shift_measure, m.surgery, m.surgery_activation, m.preset) == ("parameter", "released", "quickgelu", row)
    assert (cfg.optim.lr, cfg.optim.epochs, cfg.data.batch_size) == (0.0035, epochs, 4)
    assert (cfg.optim.warmup_epochs, cfg.optim.warmup_lr) == (1, 1e-5)


def test_a_wrong_recipe_option_lists_the_choices():
    from restore.errors import ConfigError

    with pytest.raises(ConfigError) as e:
        make_config("restore_m", {"surgery": "gided"})
    assert "['guided', 'fixed', 'released', 'none'] (or null)" in e.value.message


@pytest.mark.parametrize("variant", ["restore_p", "restore_ivlp"])
def test_the_released_recipe_applies_to_the_variants_without_released_code(tiny_clip, variant):
    """No released trainer exists for them: the released parts go on their base method (docs/fidelity.md)."""
    torch.manual_seed(5)
    method = build_method(make_config(variant, {"recipe": "released"}), tiny_clip, CLASSES, "OxfordPets").train()
    assert isinstance(method.image_adapter.act, type(method.text_adapter.act))
    assert not isinstance(method.image_adapter.act, torch.nn.ReLU)  # QuickGELU
    assert method.shift_request is None and len(method.epoch_hooks) >= 1
    out = method(Blobs(n=4).images)
    vision, text = method.shift_measure(out)
    assert sorted(vision) == sorted(text) == [1, 2]  # deep layers only
    assert (float(method.image_adapter.alpha), float(method.text_adapter.alpha)) == pytest.approx((0.01, 0.1))
