"""TCP against trainers/tcp.py and trainers/clip_text/model.py, recomputed by hand here: the TKE
(Linear, QuickGELU, Linear) of the frozen CLIP's per-dataset class features gives n_ctx tokens per class that
replace the context positions at the input of text block 8 (the tiny tower's last block); the loss adds
8 * (1 - mean cos) to the same frozen features; any class set works because the tokens come from names."""

from __future__ import annotations

import dataclasses
import re

import pytest
import torch
import torch.nn.functional as F

from restore.clip import build_model, get_config, tokenize
from restore.engine.run_config import load_run_config, resolve
from restore.engine.runs import run
from restore.errors import ConfigError
from restore.methods import build_method, make_config
from restore.methods.model_file import load_method, save_method
from tests.engine.fakes import TINY, make_tree
from tests.methods.conftest import CLASSNAMES, loss_of, train_steps
from tests.methods.test_checkpoint import fresh_backbone

UNSEEN = ["zebra", "violin", "snow_leopard"]
LEARNABLE = {"text.ctx", "text.tke.0.weight", "text.tke.0.bias", "text.tke.2.weight", "text.tke.2.bias"}


def frozen_features(clip, names, template: str) -> torch.Tensor:
    with torch.no_grad():
        f = clip.encode_text(tokenize([template.format(n.replace("_", " ")) for n in names]))
    return f / f.norm(dim=-1, keepdim=True)


def tke_by_hand(method, features: torch.Tensor) -> torch.Tensor:
    """meta_net of trainers/tcp.py: linear1, QuickGELU, linear2, reshaped to (C, n_ctx, width)."""
    tke = method.text.tke
    h = F.linear(features, tke[0].weight, tke[0].bias)
    h = h * torch.sigmoid(1.702 * h)
    out = F.linear(h, tke[2].weight, tke[2].bias)
    return out.reshape(features.shape[0], method.text.ctx.shape[0], -1)


def text_tower_by_hand(clip, sentences, ctx, class_tokens, layer: int) -> torch.Tensor:
    """Context at positions 1..n of the input; at block ``layer``'s input the same positions take the class
    tokens (weights=[1.0]: a full replacement); unit features at the end-of-text token."""
    tokens = tokenize(sentences)
    eot = tokens.argmax(-1)
    n = ctx.shape[0]
    x = clip.token_embedding(tokens)
    x = torch.cat([x[:, :1], ctx.expand(len(sentences), -1, -1), x[:, 1 + n :]], 1) + clip.positional_embedding
    for i, block in enumerate(clip.transformer.resblocks):
        if i == layer:
            x = torch.cat([x[:, :1], class_tokens, x[:, 1 + n :]], 1)
        x, _ = block(x, causal=True)
    x = clip.ln_final(x)
    return F.normalize(x[torch.arange(len(sentences)), eot] @ clip.text_projection, dim=-1)


def trained(clip, images, labels, dataset: str | None = "OxfordPets", **values):
    torch.manual_seed(0)
    method = build_method(make_config("tcp", values), clip, CLASSNAMES, dataset=dataset)
    train_steps(method, images, labels, steps=2, lr=1e-2)  # ctx and TKE away from their initialisation
    return method.eval()


@pytest.mark.parametrize(
    ("dataset", "teacher"),
    [
        (None, "a photo of a {}."),
        ("OxfordPets", "a photo of a {}, a type of pet."),
        # TCP's CUSTOM_TEMPLATES_ori differs from KgCoOp's table here
        ("FGVCAircraft", "a photo of an aircraft {}."),
        ("Food101", "a photo of a {}, a type of food."),
    ],
)
def test_class_aware_tokens_are_the_tke_of_the_frozen_class_features(dataset, teacher, tiny_clip, images, labels):
    method = trained(tiny_clip, images, labels, dataset=dataset)
    frozen = frozen_features(tiny_clip, CLASSNAMES, teacher)
    torch.testing.assert_close(method.text.class_embeddings, frozen, rtol=0, atol=1e-6)
    with torch.no_grad():
        torch.testing.assert_close(method.text.class_tokens(), tke_by_hand(method, frozen), rtol=1e-5, atol=1e-6)
    # the frozen features are rebuilt per class set, never saved
    assert not any("class_embeddings" in k for k in method.learnable_state_dict())


@pytest.mark.parametrize(("insert_layer", "block"), [(8, 2), (1, 1)])  # 8 of ViT-B/16 is the tiny tower's last
def test_text_features_equal_the_text_tower_computed_by_hand(insert_layer, block, tiny_clip, images, labels):
    method = trained(tiny_clip, images, labels, insert_layer=insert_layer)
    assert method.text.insert_layer == block
    sentences = [f"X X X X {n.replace('_', ' ')}, a type of pet." for n in CLASSNAMES]  # CUSTOM_TEMPLATES
    seen: dict[int, dict] = {}
    hooks = [
        b.register_forward_pre_hook(lambda _m, _a, kw, i=i: seen.__setitem__(i, kw), with_kwargs=True)
        for i, b in enumerate(tiny_clip.transformer.resblocks)
    ]
    try:
        with torch.no_grad():
            out = method(images)
    finally:
        for h in hooks:
            h.remove()
    with torch.no_grad():
        tokens = tke_by_hand(method, frozen_features(tiny_clip, CLASSNAMES, "a photo of a {}, a type of pet."))
        expected = text_tower_by_hand(tiny_clip, sentences, method.text.ctx, tokens, block)
    torch.testing.assert_close(out.text_features, expected, rtol=1e-4, atol=1e-5)
    # the tower's input at the insertion block: the class tokens over positions 1..4; no prompt anywhere else
    torch.testing.assert_close(seen[block]["prompts"], tokens, rtol=1e-5, atol=1e-6)
    assert seen[block]["region"] == (1, 5)
    assert all(seen[i].get("prompts") is None for i in seen if i != block)
    logits = tiny_clip.logit_scale.exp() * F.normalize(tiny_clip.encode_image(images), dim=-1) @ expected.t()
    torch.testing.assert_close(out.logits, logits, rtol=1e-4, atol=1e-4)


def test_loss_adds_eight_times_one_minus_mean_cosine_to_the_frozen_features(tiny_clip, images, labels):
    method = trained(tiny_clip, images, labels).train()
    out = method(images)
    _, logs = method.compute_loss(out, labels)
    frozen = frozen_features(tiny_clip, CLASSNAMES, "a photo of a {}, a type of pet.")
    expected = 8.0 * (1.0 - F.cosine_similarity(out.text_features.detach(), frozen, dim=1).mean())
    assert logs["kg"] == pytest.approx(float(expected), rel=1e-5)
    assert logs["ce"] == pytest.approx(float(F.cross_entropy(out.logits, labels)), rel=1e-6)
    assert logs["kg"] > 1e-3


def test_gradients_reach_exactly_the_context_and_the_tke(tiny_clip, images, labels):
    torch.manual_seed(0)
    method = build_method("tcp", tiny_clip, CLASSNAMES).train()
    loss_of(method, images, labels).backward()
    grads = {k for k, p in method.named_parameters() if p.grad is not None and float(p.grad.abs().sum()) > 0}
    assert grads == LEARNABLE == {k for k, p in method.named_parameters() if p.requires_grad}
    assert all(p.grad is None and not p.requires_grad for p in tiny_clip.parameters())
    assert not method.text.class_embeddings.requires_grad


def test_unseen_classes_get_tokens_from_their_own_names(tiny_clip, images, labels):
    method = trained(tiny_clip, images, labels)
    with torch.no_grad():
        before = method.predict(images)
        method.set_classes(UNSEEN)
        frozen = frozen_features(tiny_clip, UNSEEN, "a photo of a {}, a type of pet.")
        torch.testing.assert_close(method.text.class_tokens(), tke_by_hand(method, frozen), rtol=1e-5, atol=1e-6)
        tokens = method.text.class_tokens()
        assert not torch.allclose(tokens[0], tokens[1])  # class-aware: each class its own prompt
        sentences = [f"X X X X {n.replace('_', ' ')}, a type of pet." for n in UNSEEN]
        expected = text_tower_by_hand(tiny_clip, sentences, method.text.ctx, tke_by_hand(method, frozen), 2)
        torch.testing.assert_close(method.class_features(), expected, rtol=1e-4, atol=1e-5)
        assert method.predict(images).shape == (4, 3)
        torch.testing.assert_close(method.predict(images, method.class_features()), method.predict(images))
        method.set_classes(CLASSNAMES)
        assert torch.equal(method.predict(images), before)


def test_another_dataset_switches_both_sentences_unless_they_are_set(tiny_clip):
    method = build_method("tcp", tiny_clip, CLASSNAMES, dataset="OxfordPets")
    method.set_classes(UNSEEN, dataset="UCF101")  # CUSTOM_TEMPLATES: "a photo of a person doing {}."
    assert method.text.templates == ("X X X X person doing {}.",)
    frozen = frozen_features(tiny_clip, UNSEEN, "a photo of a person doing {}.")
    torch.testing.assert_close(method.text.class_embeddings, frozen, rtol=0, atol=1e-6)

    fixed = {"template": "a drawing of a {}.", "prompt_suffix": "{}, drawn.", "ctx_init": "a photo of a"}
    config = make_config("tcp", fixed)
    method = build_method(config, tiny_clip, CLASSNAMES, dataset="OxfordPets")
    method.set_classes(UNSEEN, dataset="UCF101")
    assert method.text.templates == ("a photo of a {}, drawn.",)
    torch.testing.assert_close(
        method.text.class_embeddings, frozen_features(tiny_clip, UNSEEN, "a drawing of a {}."), rtol=0, atol=1e-6
    )


def test_checkpoint_round_trip_gives_identical_logits_on_any_class_set(tiny_clip, images, labels, tmp_path):
    method = trained(tiny_clip, images, labels, reduction=2, weight=4.0)
    path = save_method(method, tmp_path / "tcp.safetensors")
    reloaded = load_method(path, fresh_backbone(), expect_method="tcp")
    assert reloaded.config == method.config and set(reloaded.learnable_state_dict()) == LEARNABLE
    with torch.no_grad():
        assert torch.equal(reloaded.predict(images), method.predict(images))
        other = load_method(path, fresh_backbone(), UNSEEN)
        method.set_classes(UNSEEN)
        assert torch.equal(other.predict(images), method.predict(images))


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"prompt_suffix": "no class"}, r"method \(tcp\)\.prompt_suffix: template 'no class' must hold exactly one"),
        ({"template": "a {} of {}"}, r"method \(tcp\)\.template: template 'a \{\} of \{\}' must hold exactly one"),
        ({"insert_layer": 0}, r"insert_layer: 0 is below the minimum 1"),
        ({"reduction": 0}, r"reduction: 0 is below the minimum 1"),
    ],
)
def test_bad_settings_fail_when_read(values, message):
    with pytest.raises(ConfigError, match=message):
        make_config("tcp", values)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return make_tree(tmp_path_factory.mktemp("data"))


def test_engine_run_trains_base_classes_and_tests_novel_ones(data_root, tmp_path):
    from restore.api import evaluate
    from restore.results import open_results

    out = tmp_path / "runs"
    values = {**TINY, "method": "tcp", "protocol": "b2n", "data.dataset": "dtd", "data.root": data_root, "out": out,
              "optim.epochs": 2, "data.batch_size": 4, "data.shots": 4}  # fmt: skip
    result = run(load_run_config(None, values))
    m = result.metrics
    assert m["base"]["n"] == 12 and m["novel"]["n"] == 12  # 3 + 3 classes of the fake DTD, 4 test images each
    # the own set filled TCP's settings (50 epochs and batch 32 are overridden here)
    assert result.config.method == make_config("tcp") and result.config.optim.lr == 0.002
    # feature shift: text blocks 0 (context) and 2 (class-aware tokens) carry prompts; the image tower none
    shift = m["shift"]
    assert shift["vision"] == [0.0, 0.0, 0.0] and shift["text"][1] == 0.0
    assert shift["text"][0] > 0 and shift["text"][2] > 0
    with open_results(out / "results.sqlite") as store:
        (row,) = store.query()
    assert row.status == "finished" and row.method == "tcp" and row.metrics["novel"] == m["novel"]
    # novel classes the model never saw, evaluated again from the saved model: the recorded numbers
    again = evaluate(result.run_dir, dataset="dtd", root=data_root, protocol="b2n", device="cpu")
    assert again["base"] == m["base"] and again["novel"] == m["novel"]


def test_restore_methods_prints_its_settings_and_schedules():
    from typer.testing import CliRunner

    from restore.cli import app

    result = CliRunner().invoke(app, ["methods", "tcp"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert "text tower only, so no RESTORE variant" in result.output
    for field in ("n_ctx", "ctx_init", "weight", "insert_layer", "reduction", "template", "prompt_suffix"):
        assert re.search(rf"│ method\.{field}\s", result.output), field
    assert "clip_text/model.py layers=[8]" in result.output
    own = r"│ own\s+│ b2n\s+│ 0\.002 │ 50 \(sun397: 25; imagenet: 25\)\s+│ 32\s+│ n_ctx=4, ctx_init=None, weight=8\.0"
    assert re.search(own, result.output)
    assert re.search(r"│ restore_paper │ xd\s+│ 0\.002 │ 2\s+│ 4\s+│", result.output)


@pytest.mark.parametrize(
    ("dataset", "epochs"), [("dtd", 50), ("eurosat", 50), ("sun397", 25), ("SUN397", 25), ("imagenet", 25)]
)
def test_own_schedule_trains_sun397_and_imagenet_25_epochs(dataset, epochs):
    # the authors' log (scripts/nohup.out, removed in eec9d57) shows MAX_EPOCH 25 for these two, 50 elsewhere
    values = {"method": "tcp", "protocol": "b2n", "data.dataset": dataset, "data.shots": 16}
    cfg = resolve(load_run_config(None, values), image_size=224)
    assert (cfg.optim.epochs, cfg.optim.lr, cfg.data.batch_size) == (epochs, 0.002, 32)


def test_a_one_block_text_tower_is_refused():
    cfg = get_config("tiny")
    clip = build_model(dataclasses.replace(cfg, text=dataclasses.replace(cfg.text, layers=1)))
    with pytest.raises(ConfigError, match=r"TCP needs a text tower of 2 blocks or more .*it has 1") as err:
        build_method("tcp", clip, CLASSNAMES)
    assert err.value.hint == "use a backbone with a deeper text tower"
