"""Every way a checkpoint can be wrong gives one CheckpointError/DownloadError that says what and where."""

from __future__ import annotations

import json
import zipfile

import pytest
import torch
from safetensors.torch import save_file

from restore.clip import load, save_clip
from restore.clip.cache import clip_cache
from restore.errors import CheckpointError, DownloadError
from tests.clip.load_helpers import open_clip_tiny, save_openai_torchscript


def _state(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _cut(path, fraction=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


@pytest.mark.parametrize("fmt", ["pt", "safetensors", "ours", "torchscript"])
def test_truncated_file(tmp_path, tiny_clip, fmt):
    path = tmp_path / f"model.{fmt}"
    if fmt == "pt":
        torch.save(_state(tiny_clip), path)
    elif fmt == "safetensors":
        save_file(_state(tiny_clip), str(path))
    elif fmt == "ours":
        save_clip(tiny_clip, path)
    else:
        save_openai_torchscript(open_clip_tiny(True), path, 32)
    _cut(path)
    with pytest.raises(CheckpointError) as e:
        load(path)
    assert str(path) in str(e.value) and "truncated or damaged" in str(e.value)


def test_truncated_legacy_pickle(tmp_path, tiny_clip):
    path = tmp_path / "legacy.pt"
    torch.save(_state(tiny_clip), path, _use_new_zipfile_serialization=False)
    _cut(path)
    with pytest.raises(CheckpointError, match="truncated or damaged"):
        load(path)


def test_empty_file_and_files_that_are_no_checkpoint(tmp_path):
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"empty.pt is empty"):
        load(tmp_path / "empty.pt")
    (tmp_path / "notes.pt").write_text("these are my notes, not weights\n")
    with pytest.raises(CheckpointError, match=r"notes.pt is not a checkpoint"):
        load(tmp_path / "notes.pt")
    (tmp_path / "photo.safetensors").write_bytes(b"\xff\xd8\xff\xe0" + bytes(100))
    with pytest.raises(CheckpointError, match="is not a checkpoint"):
        load(tmp_path / "photo.safetensors")
    with zipfile.ZipFile(tmp_path / "archive.pt", "w") as zf:
        zf.writestr("images/a.txt", "a zip, but no torch.save file")
    with pytest.raises(CheckpointError, match=r"archive.pt is not a checkpoint"):
        load(tmp_path / "archive.pt")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="holds a list, not a state dict"):
        load(tmp_path / "list.pt")
    torch.save({"visual.proj": torch.zeros(2), "step": 3}, tmp_path / "mixed.pt")
    with pytest.raises(CheckpointError, match="entries 'step' are not tensors"):
        load(tmp_path / "mixed.pt")


class _RunsCode:
    """A pickle that would create a file when unpickled by an unrestricted loader."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_pickled_code_is_never_run(tmp_path, tiny_clip):
    marker = tmp_path / "pwned"
    path = tmp_path / "trap.pt"
    torch.save({"state_dict": _state(tiny_clip), "payload": _RunsCode(marker)}, path)
    with pytest.raises(CheckpointError) as e:
        load(path)
    assert "pickled Python objects" in str(e.value) and "state_dict" in e.value.hint
    assert not marker.exists()


def test_checkpoint_of_another_architecture(tmp_path, tiny_clip):
    path = save_clip(tiny_clip, tmp_path / "tiny.safetensors")
    with pytest.raises(CheckpointError) as e:
        load(path, arch="ViT-B/16")
    msg = str(e.value)
    assert "holds a tiny" in msg and "not the requested ViT-B/16" in msg and str(path) in msg


def test_cached_file_for_a_name_is_another_architecture(tiny_clip):
    cached = clip_cache() / "ViT-B-16.pt"
    cached.parent.mkdir(parents=True)
    torch.save(_state(tiny_clip), cached)
    with pytest.raises(CheckpointError) as e:
        load("ViT-B/16", quick_gelu=True)
    assert str(cached) in str(e.value) and "not the requested ViT-B/16" in str(e.value)


def test_folders_without_weights(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="contains no CLIP weights \\(it holds nothing\\)"):
        load(tmp_path / "empty")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "README.md").write_text("hi")
    with pytest.raises(CheckpointError, match=r"it holds README.md"):
        load(tmp_path / "docs")
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text(json.dumps({"model_type": "clip", "architectures": ["CLIPModel"]}))
    with pytest.raises(CheckpointError) as e:
        load(hf)
    assert "config.json but no weights" in str(e.value) and "model.safetensors" in str(e.value)


def test_folder_with_several_weight_files(tmp_path, tiny_clip):
    save_clip(tiny_clip, tmp_path / "a.safetensors")
    save_clip(tiny_clip, tmp_path / "b.safetensors")
    with pytest.raises(CheckpointError, match=r"several weight files: a.safetensors, b.safetensors"):
        load(tmp_path)


def test_hugging_face_weights_without_config_or_of_another_model(tmp_path):
    state = {"text_model.final_layer_norm.weight": torch.ones(4), "vision_model.pre_layrnorm.weight": torch.ones(4)}
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"no config.json beside it"):
        load(tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "siglip", "architectures": ["SiglipModel"]}))
    with pytest.raises(CheckpointError, match="describes a siglip model, not a CLIP model"):
        load(tmp_path)


def test_missing_and_unexpected_keys_are_listed(tmp_path, tiny_clip):
    state = _state(tiny_clip)
    del state["ln_final.bias"]
    state["extra.weight"] = torch.zeros(3)
    torch.save(state, tmp_path / "a.pt")
    with pytest.raises(CheckpointError) as e:
        load(tmp_path / "a.pt", quick_gelu=True)
    msg = str(e.value)
    assert "missing 1 key(s): ln_final.bias" in msg and "1 unexpected key(s): extra.weight" in msg
    state = _state(tiny_clip)
    for i in range(7):
        state[f"junk.{i}"] = torch.zeros(1)
    torch.save(state, tmp_path / "b.pt")
    with pytest.raises(
        CheckpointError, match=r"7 unexpected key\(s\): junk.0, junk.1, junk.2, junk.3, junk.4 and 2 more"
    ):
        load(tmp_path / "b.pt", quick_gelu=True)


def test_tensor_of_the_wrong_shape(tmp_path, tiny_clip):
    state = _state(tiny_clip)
    state["visual.ln_post.bias"] = torch.zeros(5)
    torch.save(state, tmp_path / "a.pt")
    with pytest.raises(CheckpointError, match=r"wrong shape: visual.ln_post.bias \(5,\) \(expected \(64,\)\)"):
        load(tmp_path / "a.pt", quick_gelu=True)


def test_state_dict_of_another_kind_of_model(tmp_path):
    torch.save({"fc.weight": torch.zeros(2, 2), "fc.bias": torch.zeros(2)}, tmp_path / "mlp.pt")
    with pytest.raises(CheckpointError) as e:
        load(tmp_path / "mlp.pt")
    assert "not a CLIP ViT checkpoint" in str(e.value) and "fc.weight" in e.value.hint


def test_unknown_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError) as e:
        load("ViT-H/99")
    assert "'ViT-H/99' is neither an existing file or folder nor a known CLIP model" in str(e.value)
    assert "ViT-B/16" in e.value.hint and "openai/clip-vit-base-patch16" in e.value.hint
    with pytest.raises(CheckpointError, match="architecture without released weights"):
        load("tiny")


def test_known_name_while_offline_names_file_url_and_place(monkeypatch):
    monkeypatch.setenv("RESTORE_OFFLINE", "1")
    monkeypatch.delenv("RESTORE_CLIP_URL_VIT_B_16")
    with pytest.raises(DownloadError) as e:
        load("ViT-B-16")
    text = str(e.value)
    url = "https://openaipublic.azureedge.net/clip/models/"
    assert f"{url}5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f/ViT-B-16.pt" in text
    assert f"put it at {clip_cache() / 'ViT-B-16.pt'}" in text
    with pytest.raises(DownloadError) as e:
        load("openai/clip-vit-base-patch16")
    folder = clip_cache() / "openai--clip-vit-base-patch16"
    assert str(folder / "config.json") in str(e.value) and str(folder / "model.safetensors") in str(e.value)


def test_known_name_that_cannot_be_downloaded(monkeypatch):
    # conftest points the URL at a port nobody listens on.
    with pytest.raises(DownloadError) as e:
        load("ViT-B/32", progress=False)
    text = str(e.value)
    assert "not in the cache and could not be downloaded" in text
    assert "http://127.0.0.1:9/" in text and f"put it at {clip_cache() / 'ViT-B-32.pt'}" in text
    assert not (clip_cache() / "ViT-B-32.pt").exists()
