"""Checkpoints hold only a method's learnable state plus the config that rebuilds it, and reload to the same
logits on a fresh copy of the backbone; damaged or mismatched checkpoints fail with CheckpointError."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from restore.clip import build_model, get_config
from restore.errors import CheckpointError, ConfigError
from restore.methods import build_method, make_config, method_names
from restore.methods.model_file import load_method, read_method, save_method
from tests.methods.conftest import CLASSNAMES, train_steps

# Small non-default settings, so the round trip must carry the config (and PromptSRC's teacher stays cheap).
SETTINGS = {
    "coop": {"n_ctx": 6},
    "cocoop": {"image_chunk": 2},
    "promptsrc": {"teacher_templates": "a photo of a {}.", "gpa_std": 2.0},
    "kgcoop": {"weight": 4.0},
    "maple": {"depth": 2},
    "dept_maple": {"depth": 2, "dept_weight": 0.5},
    "dept_promptsrc": {"teacher_templates": "a photo of a {}."},
    # A 64-d representation space: the release's 512 outweighs the tiny backbone itself.
    "mmrl": {"rep_dim": 64, "rep_start": 2, "alpha": 0.6},
    "restore_mmrl": {"rep_dim": 64, "rep_start": 2, "alpha": 0.6},
}
OTHER_CLASSES = ["zebra", "violin", "snow_leopard"]


def fresh_backbone():
    """The same weights as the ``tiny_clip`` fixture, in new tensors: nothing may hang on object identity."""
    torch.manual_seed(0)
    return build_model(get_config("tiny")).eval()


def trained(name: str, clip, images, labels, dataset: str | None = None):
    torch.manual_seed(3)
    method = build_method(make_config(name, SETTINGS.get(name)), clip, CLASSNAMES, dataset)
    if method.learnable_parameters():
        train_steps(method, images, labels, steps=2, lr=1e-2)  # the state must differ from a fresh build
    return method.eval()


@pytest.mark.parametrize("name", method_names())
def test_checkpoint_is_small_and_reloads_to_identical_logits(name, tiny_clip, images, labels, tmp_path,
                                                             record_property):  # fmt: skip
    method = trained(name, tiny_clip, images, labels, dataset="OxfordPets")
    path = save_method(method, tmp_path / "model.safetensors", extra={"epoch": 2})

    state = load_file(str(path))
    assert not any(k.startswith("clip.") for k in state)
    assert set(state) == set(method.learnable_state_dict())
    n_params = sum(v.numel() for v in state.values())
    # parameters plus the method's own buffers (RESTORE's surgery ratios), never the backbone's
    buffers = {k: v for k, v in method.named_buffers() if not k.startswith("clip.") and k in state}
    assert n_params == sum(p.numel() for p in method.learnable_parameters()) + sum(v.numel() for v in buffers.values())
    backbone_bytes = sum(v.numel() * v.element_size() for v in tiny_clip.state_dict().values())
    size = path.stat().st_size
    assert size < backbone_bytes / 50, f"{name}: {size} bytes vs a {backbone_bytes}-byte backbone"
    record_property("checkpoint_bytes", size)
    record_property("learnable_parameters", n_params)

    ckpt = read_method(path)
    assert (ckpt.method, ckpt.classnames, ckpt.dataset, ckpt.extra) == (name, CLASSNAMES, "OxfordPets", {"epoch": 2})
    assert ckpt.config == json.loads(json.dumps(dataclasses.asdict(method.config)))

    reloaded = load_method(path, fresh_backbone(), expect_method=name)
    assert reloaded.config == method.config and not reloaded.training  # ready to evaluate
    with torch.no_grad():
        for k, v in method.learnable_state_dict().items():
            assert torch.equal(reloaded.learnable_state_dict()[k], v), k
        assert torch.equal(reloaded.predict(images), method.predict(images))
        features = method.class_features()
        if features is not None:  # the evaluation path: text side once, then images
            assert torch.equal(reloaded.predict(images, reloaded.class_features()), method.predict(images, features))


@pytest.mark.parametrize("name", ["coop", "maple", "cocoop", "zeroshot"])
def test_reload_for_other_classes_equals_switching_classes(name, tiny_clip, images, labels, tmp_path):
    method = trained(name, tiny_clip, images, labels)
    path = save_method(method, tmp_path / "m.safetensors")
    reloaded = load_method(path, fresh_backbone(), OTHER_CLASSES)
    method.set_classes(OTHER_CLASSES)
    assert reloaded.classnames == OTHER_CLASSES
    with torch.no_grad():
        assert torch.equal(reloaded.predict(images), method.predict(images))


def test_class_specific_coop_refuses_another_class_set(tiny_clip, images, labels, tmp_path):
    config = make_config("coop", {"class_specific": True, "n_ctx": 4})
    method = build_method(config, tiny_clip, CLASSNAMES)
    assert tuple(method.text.ctx.shape) == (len(CLASSNAMES), 4, 32)
    train_steps(method, images, labels, steps=1, lr=1e-2)
    method.set_classes(CLASSNAMES)  # its own classes: fine
    with pytest.raises(ConfigError, match="cannot serve 3") as err:
        method.set_classes(OTHER_CLASSES)
    assert "class_specific: false" in str(err.value)
    same_size = ["zebra", "violin", "snow_leopard", "kettle", "tulip"]
    with pytest.raises(ConfigError, match="differs at 5 position"):
        method.set_classes(same_size)
    with pytest.raises(ConfigError, match="differs at 2 position"):
        method.set_classes([CLASSNAMES[1], CLASSNAMES[0], *CLASSNAMES[2:]])
    path = save_method(method.eval(), tmp_path / "csc.safetensors")
    with pytest.raises(ConfigError, match="differs at 5 position"):
        load_method(path, fresh_backbone(), same_size)
    reloaded = load_method(path, fresh_backbone())
    with torch.no_grad():
        assert torch.equal(reloaded.predict(images), method.predict(images))


def test_wrong_method_or_backbone_is_a_checkpoint_error(tiny_clip, images, labels, tmp_path):
    path = save_method(trained("coop", tiny_clip, images, labels), tmp_path / "coop.safetensors")
    with pytest.raises(CheckpointError, match="holds a 'coop' model, not 'maple'"):
        load_method(path, tiny_clip, expect_method="maple")
    cfg = get_config("tiny")
    other = build_model(dataclasses.replace(cfg, name="tiny-wide", text=dataclasses.replace(cfg.text, width=48)))
    with pytest.raises(CheckpointError, match="trained on backbone tiny but the loaded backbone is tiny-wide"):
        load_method(path, other)


def test_damaged_or_foreign_files_are_checkpoint_errors(tiny_clip, images, labels, tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        read_method(tmp_path / "missing.safetensors")
    path = save_method(trained("coop", tiny_clip, images, labels), tmp_path / "coop.safetensors")
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="not a readable method checkpoint"):
        read_method(truncated)
    foreign = tmp_path / "weights.safetensors"
    save_file({"visual.proj": torch.zeros(2, 2)}, str(foreign))
    with pytest.raises(CheckpointError, match="not a restore method checkpoint"):
        read_method(foreign)
    # A checkpoint of the same method whose state does not fit (another n_ctx): named tensors and shapes.
    state = load_file(str(path))
    method = build_method("coop", tiny_clip, CLASSNAMES)
    with pytest.raises(CheckpointError, match=r"text.ctx: \(6, 32\) vs \(16, 32\)"):
        method.load_learnable_state_dict(state)
