"""Configs: errors name what was wrong and the valid choices; defaults are those of the released configs."""

from __future__ import annotations

import pytest

from restore.clip.templates import COOP_TEMPLATES, KGCOOP_TEMPLATES
from restore.errors import ConfigError
from restore.methods import build_method, make_config, method_class, method_names, method_table
from restore.methods.schedules import schedule_for
from tests.methods.conftest import CLASSNAMES


def test_unknown_method_lists_the_known_ones():
    with pytest.raises(ConfigError, match="unknown method 'coopp'") as err:
        make_config("coopp")
    for name in method_names():
        assert name in str(err.value)
    assert method_class("Deep-Text").name == "deep_text"  # case and dashes are forgiven


def test_unknown_key_lists_the_valid_keys():
    with pytest.raises(ConfigError, match=r"unknown config key method \(maple\)\.nctx") as err:
        make_config("maple", {"nctx": 4})
    assert "valid keys of method (maple): ctx_init, depth, n_ctx" in str(err.value)


@pytest.mark.parametrize(
    ("name", "values", "message"),
    [
        ("coop", {"n_ctx": 0}, r"n_ctx: 0 is below the minimum 1"),
        ("coop", {"n_ctx": "many"}, r"n_ctx: expected an integer, got 'many'"),
        ("coop", {"class_specific": "yes"}, r"class_specific: expected true or false"),
        ("maple", {"depth": 2.5}, r"depth: expected an integer, got 2.5"),
        ("promptsrc", {"text_loss_weight": -1}, r"text_loss_weight: -1.0 is below the minimum 0.0"),
        ("cocoop", {"image_chunk": 0}, r"image_chunk: 0 is below the minimum 1"),
    ],
)
def test_bad_values_say_what_is_wrong(name, values, message):
    with pytest.raises(ConfigError, match=message):
        make_config(name, values)


def test_unknown_template_setting_lists_the_choices(tiny_clip):
    config = make_config("zeroshot", {"templates": "imagenet81"})
    with pytest.raises(ConfigError, match="unknown template setting 'imagenet81'") as err:
        build_method(config, tiny_clip, CLASSNAMES)
    assert "single, ensemble, imagenet80, promptsrc60" in str(err.value)


def test_context_init_longer_than_n_ctx_is_explained(tiny_clip):
    # CoOp's release sets n_ctx to the number of init words; here a mismatch is an error that says how to fix it.
    with pytest.raises(ConfigError, match=r"n_ctx=16 exceeds the 4 tokens of ctx_init 'a photo of a'") as err:
        build_method(make_config("coop", {"ctx_init": "a photo of a"}), tiny_clip, CLASSNAMES)
    assert "lower n_ctx" in str(err.value)
    assert build_method(make_config("coop", {"ctx_init": "a photo of a", "n_ctx": 4}), tiny_clip, CLASSNAMES)


# Defaults and training settings of the released configs (files named in each method's source comments).
RELEASED = {
    # CoOp scripts/coop/main.sh (NCTX 16, CSC False, end) + configs/trainers/CoOp/vit_b16.yaml (16 shots)
    "coop": ({"n_ctx": 16, "ctx_init": None, "class_specific": False}, {"lr": 0.002, "epochs": 200, "batch_size": 32}),
    # CoOp configs/trainers/CoCoOp/vit_b16_c4_ep10_batch1_ctxv1.yaml
    "cocoop": ({"n_ctx": 4, "ctx_init": "a photo of a", "reduction": 16}, {"lr": 0.002, "epochs": 10, "batch_size": 1}),
    # MaPLe configs/trainers/VPT/vit_b16_c2_ep5_batch4_4.yaml
    "vpt": ({"n_ctx": 8, "depth": 12}, {"lr": 0.0025, "epochs": 5, "batch_size": 4}),
    # MaPLe configs/trainers/IVLP/vit_b16_c2_ep5_batch4_4ctx_language_only.yaml
    "deep_text": ({"n_ctx": 4, "depth": 12, "ctx_init": "a photo of a"}, {"lr": 0.0025, "epochs": 5, "batch_size": 4}),
    # PromptSRC configs/trainers/IVLP/vit_b16_c2_ep20_batch4_4+4ctx.yaml
    "ivlp": (
        {"n_ctx_text": 4, "n_ctx_vision": 4, "depth_text": 9, "depth_vision": 9, "ctx_init": "a photo of a"},
        {"lr": 0.0025, "epochs": 20, "batch_size": 4},
    ),
    # MaPLe configs/trainers/MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml
    "maple": ({"n_ctx": 2, "depth": 9, "ctx_init": "a photo of a"}, {"lr": 0.0035, "epochs": 5, "batch_size": 4}),
    # PromptSRC configs/trainers/PromptSRC/vit_b16_c2_ep20_batch4_4+4ctx.yaml (GPA_MEAN 15 = 3/4 of 20 epochs)
    "promptsrc": (
        {"n_ctx_text": 4, "n_ctx_vision": 4, "depth_text": 9, "depth_vision": 9, "ctx_init": "a photo of a",
         "text_loss_weight": 25.0, "image_loss_weight": 10.0, "gpa": True, "gpa_std": 1.0},
        {"lr": 0.0025, "epochs": 20, "batch_size": 4},
    ),
    # KgCoOp scripts/base2new_train.sh (NCTX 4, WEIGHT 8.0) + configs/trainers/KgCoOp/vit_b16_ep100_ctxv1.yaml
    "kgcoop": (
        {"n_ctx": 4, "ctx_init": "a photo of a", "weight": 8.0}, {"lr": 0.002, "epochs": 100, "batch_size": 128}
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(RELEASED))
def test_defaults_are_the_released_ones(name):
    # The option defaults are the release's; lr/epochs/batch come from the `own` schedule set (16 shots, b2n).
    fields, train = RELEASED[name]
    config = make_config(name)
    assert {k: getattr(config, k) for k in fields} == fields
    own = schedule_for(name, "own", "b2n")
    assert {"lr": own.lr, "epochs": own.epochs_for("dtd", 16), "batch_size": own.batch_size} == train


def test_single_templates_are_coop_and_kgcoop_tables():
    # CoOp trainers/zsclip.py CUSTOM_TEMPLATES and KgCoOp trainers/kgcoop.py, which differ only for DTD.
    assert COOP_TEMPLATES["DescribableTextures"] == "{} texture."
    assert KGCOOP_TEMPLATES["DescribableTextures"] == "a photo of a {}, a type of texture."
    assert {k: v for k, v in KGCOOP_TEMPLATES.items() if k != "DescribableTextures"} == {
        k: v for k, v in COOP_TEMPLATES.items() if k != "DescribableTextures"
    }
    assert COOP_TEMPLATES["EuroSAT"] == "a centered satellite photo of {}."


def test_method_table_describes_every_method():
    rows = {row["name"]: row for row in method_table()}
    assert set(rows) == set(method_names())
    for row in rows.values():
        assert row["summary"] and all(help_text for *_, help_text in row["fields"])
