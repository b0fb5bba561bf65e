"""restore.clip.load() on every supported format equals open_clip / transformers on the same random weights."""

from __future__ import annotations

import logging
import shutil

import pytest
import torch

from restore.clip import build_model, get_config, load, save_clip
from restore.clip.architectures import CLIPConfig, TextConfig
from tests.clip.load_helpers import (
    assert_parity,
    hf_model,
    hf_outputs,
    inputs,
    open_clip_b16,
    open_clip_outputs,
    open_clip_tiny,
    openai_keys,
    save_open_clip_formats,
    save_openai_torchscript,
)

LOADER = "restore.clip.checkpoint_loading"


def test_openai_torchscript_archive(tmp_path, caplog):
    ref_model = open_clip_tiny(quick_gelu=True)
    images, tokens = inputs(32)
    ref = open_clip_outputs(ref_model, images, tokens)
    path = tmp_path / "ViT-tiny.pt"
    state = save_openai_torchscript(ref_model, path, image_size=32)
    assert set(state) == openai_keys(3, 3)  # laid out exactly like OpenAI's archives
    assert state["visual.proj"].dtype == torch.float16
    with caplog.at_level(logging.WARNING, logger=LOADER):
        model = load(path)
    assert caplog.records == []  # QuickGELU is known from the archive: no note
    assert model.cfg.quick_gelu and model.cfg.name == "tiny"
    assert_parity(model, ref, images, tokens)


def test_plain_state_dict_with_openai_keys_means_quick_gelu(tmp_path):
    ref_model = open_clip_tiny(quick_gelu=True)
    images, tokens = inputs(32)
    state = save_openai_torchscript(ref_model, tmp_path / "jit.pt", image_size=32)
    torch.save(state, tmp_path / "openai_state.pt")  # fp16, with input_resolution/context_length/vocab_size
    model = load(tmp_path / "openai_state.pt")
    assert model.cfg.quick_gelu
    assert_parity(model, open_clip_outputs(ref_model, images, tokens), images, tokens)


@pytest.mark.parametrize("fmt", ["bin", "safetensors", "wrapped"])
def test_open_clip_files_default_to_gelu_with_a_note(tmp_path, caplog, fmt):
    ref_model = open_clip_tiny(quick_gelu=False)
    images, tokens = inputs(32)
    paths = save_open_clip_formats(ref_model, tmp_path, quick_gelu_sidecar=None)
    with caplog.at_level(logging.WARNING, logger=LOADER):
        model = load(paths[fmt])
    assert not model.cfg.quick_gelu
    note = " ".join(r.getMessage() for r in caplog.records)
    assert "assuming open_clip's default GELU" in note and "quick_gelu=True" in note
    assert_parity(model, open_clip_outputs(ref_model, images, tokens), images, tokens)


@pytest.mark.parametrize("fmt", ["bin", "safetensors"])
def test_open_clip_sidecar_config_sets_quick_gelu(tmp_path, fmt):
    ref_model = open_clip_tiny(quick_gelu=True)
    images, tokens = inputs(32)
    paths = save_open_clip_formats(ref_model, tmp_path, quick_gelu_sidecar=True)
    model = load(paths[fmt])
    assert model.cfg.quick_gelu
    assert_parity(model, open_clip_outputs(ref_model, images, tokens), images, tokens)


def test_open_clip_folder_and_quick_gelu_argument(tmp_path):
    ref_model = open_clip_tiny(quick_gelu=True)
    images, tokens = inputs(32)
    paths = save_open_clip_formats(ref_model, tmp_path, quick_gelu_sidecar=None)
    # The wrong activation shows: GELU (assumed) does not match a QuickGELU model...
    assumed = load(paths["wrapped"])
    with torch.no_grad():
        diff = (assumed.encode_image(images) - ref_model.encode_image(images)).abs().max()
    assert diff > 1e-4
    # ...and the argument overrides it, for a file and for an open_clip folder.
    assert_parity(load(paths["wrapped"], quick_gelu=True), open_clip_outputs(ref_model, images, tokens), images, tokens)
    model = load(tmp_path, quick_gelu=True)  # picks open_clip_pytorch_model.bin
    assert_parity(model, open_clip_outputs(ref_model, images, tokens), images, tokens)


def test_open_clip_hub_folder_beside_another_librarys_config(tmp_path):
    """A folder like timm/vit_base_patch16_clip_224.openai: open_clip files plus timm's own config.json."""
    ref_model = open_clip_tiny(quick_gelu=True)
    images, tokens = inputs(32)
    save_open_clip_formats(ref_model, tmp_path, quick_gelu_sidecar=True, formats=("safetensors",))
    (tmp_path / "model.safetensors").rename(tmp_path / "open_clip_model.safetensors")
    (tmp_path / "config.json").write_text('{"architecture": "vit_base_patch16_clip_224", "num_classes": 512}')
    model = load(tmp_path)
    assert model.cfg.quick_gelu
    assert_parity(model, open_clip_outputs(ref_model, images, tokens), images, tokens)


@pytest.mark.parametrize("act", ["quick_gelu", "gelu"])
def test_hugging_face_folder(tmp_path, act):
    ref_model = hf_model("tiny", act)
    images, tokens = inputs(32)
    ref_model.save_pretrained(tmp_path / "hf")
    model = load(tmp_path / "hf")
    assert model.cfg.quick_gelu == (act == "quick_gelu") and model.cfg.name == "tiny"
    assert_parity(model, hf_outputs(ref_model, images, tokens), images, tokens)
    # The weights file alone finds its config.json beside it.
    assert_parity(load(tmp_path / "hf" / "model.safetensors"), hf_outputs(ref_model, images, tokens), images, tokens)


def test_hugging_face_bin_and_sharded_folders(tmp_path):
    ref_model = hf_model("tiny")
    images, tokens = inputs(32)
    ref = hf_outputs(ref_model, images, tokens)
    ref_model.save_pretrained(tmp_path / "sharded", max_shard_size="100KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").exists()
    assert_parity(load(tmp_path / "sharded"), ref, images, tokens)
    # pytorch_model.bin (older transformers): the same tensors through torch.save.
    from safetensors.torch import load_file

    (tmp_path / "bin").mkdir()
    shutil.copy(tmp_path / "sharded" / "config.json", tmp_path / "bin" / "config.json")
    state = {}
    for f in sorted((tmp_path / "sharded").glob("*.safetensors")):
        state.update(load_file(f))
    torch.save(state, tmp_path / "bin" / "pytorch_model.bin")
    assert_parity(load(tmp_path / "bin"), ref, images, tokens)


def test_own_format_round_trip(tmp_path, tiny_clip):
    images, tokens = inputs(32)
    path = save_clip(tiny_clip, tmp_path / "m.safetensors")
    loaded = load(path)
    assert loaded.cfg == tiny_clip.cfg
    with torch.no_grad():
        ref = (tiny_clip.encode_image(images), tiny_clip.encode_text(tokens))
        assert torch.equal(loaded.encode_image(images), ref[0]) and torch.equal(loaded.encode_text(tokens), ref[1])
    assert not (tmp_path / "m.safetensors.tmp").exists()
    # The stored activation is used; the argument still wins.
    assert not load(path, quick_gelu=False).cfg.quick_gelu


def test_own_format_keeps_compact_token_embedding(tmp_path):
    base = get_config("tiny")
    cfg = CLIPConfig("world", 32, base.vision, TextConfig(77, 49408, 32, 3, 2, embedding_rows=5), quick_gelu=False)
    torch.manual_seed(3)
    model = build_model(cfg).eval()
    model.token_embedding.set_vocabulary([320, 1929, 2368, 49406, 49407][:4])
    _, tokens = inputs(32)
    loaded = load(save_clip(model, tmp_path / "world.safetensors"))
    assert loaded.cfg == cfg
    assert torch.equal(loaded.token_embedding.lookup, model.token_embedding.lookup)
    with torch.no_grad():
        assert torch.equal(loaded.encode_text(tokens), model.encode_text(tokens))


def test_device_argument_and_fp32(tmp_path):
    ref_model = open_clip_tiny(quick_gelu=True)
    save_openai_torchscript(ref_model, tmp_path / "a.pt", image_size=32)
    model = load(tmp_path / "a.pt", device=torch.device("cpu"))
    assert {p.device.type for p in model.parameters()} == {"cpu"}
    assert {p.dtype for p in model.parameters()} == {torch.float32}


def test_vit_b16_every_format(tmp_path):
    """One ViT-B/16 through every format (~600 MB per file: written one at a time, deleted after use)."""
    images, tokens = inputs(224, n_images=1)
    ref_model = open_clip_b16(quick_gelu=True)
    ref = open_clip_outputs(ref_model, images, tokens)

    path = tmp_path / "ViT-B-16.pt"
    state = save_openai_torchscript(ref_model, path, image_size=224)
    assert set(state) == openai_keys(12, 12)
    model = load(path, arch="ViT-B/16")
    assert model.cfg.name == "ViT-B/16" and model.cfg.quick_gelu
    assert_parity(model, ref, images, tokens)
    torch.save(state, tmp_path / "plain.pt")
    del state, model
    path.unlink()
    assert_parity(load(tmp_path / "plain.pt", arch="ViT-B-16"), ref, images, tokens)
    (tmp_path / "plain.pt").unlink()

    # (.bin is torch.save like the wrapped checkpoint; the tiny tests cover it.)
    paths = save_open_clip_formats(
        ref_model, tmp_path / "oc", quick_gelu_sidecar=True, formats=("safetensors", "wrapped")
    )
    assert_parity(load(paths["safetensors"]), ref, images, tokens)
    paths["safetensors"].unlink()
    assert_parity(load(paths["wrapped"], quick_gelu=True), ref, images, tokens)
    shutil.rmtree(tmp_path / "oc")
    del ref_model

    hf = hf_model("ViT-B/16")
    hf.save_pretrained(tmp_path / "hf")
    hf_ref = hf_outputs(hf, images, tokens)
    del hf
    model = load(tmp_path / "hf", arch="openai/clip-vit-base-patch16")
    assert model.cfg.name == "ViT-B/16" and model.cfg.vision.heads == 12 and model.cfg.text.heads == 8
    assert_parity(model, hf_ref, images, tokens)


def test_loaded_model_does_not_depend_on_the_file(tmp_path, tiny_clip):
    """Parameters are not views of a mapped file: overwriting the file in place leaves the model intact."""
    images, _ = inputs(32)
    path = save_clip(tiny_clip, tmp_path / "m.safetensors")
    loaded = load(path)
    with open(path, "wb") as f:  # truncates the same inode (a mapped tensor would now fault)
        f.write(b"")
    with torch.no_grad():
        assert torch.equal(loaded.encode_image(images), tiny_clip.encode_image(images))
