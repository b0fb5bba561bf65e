"""Known names fetched into the cache through a real HTTP server on 127.0.0.1 serving generated checkpoints.

The tiny architecture is registered as a "released" model for these tests (the tables in restore.clip.cache
are the registry), so a download is a few hundred kilobytes and the loaded model can be checked for parity.
"""

from __future__ import annotations

import hashlib

import pytest

from restore.clip import cache, load
from restore.errors import DownloadError
from restore.transfer import part_path
from tests.clip.load_helpers import (
    assert_parity,
    hf_model,
    hf_outputs,
    inputs,
    open_clip_outputs,
    open_clip_tiny,
    save_openai_torchscript,
)
from tests.local_http import Served, serve


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """A tiny QuickGELU model's OpenAI-style archive and HF folder, with open_clip/transformers outputs."""
    root = tmp_path_factory.mktemp("release")
    images, tokens = inputs(32)
    ref_model = open_clip_tiny(quick_gelu=True)
    save_openai_torchscript(ref_model, root / "tiny.pt", image_size=32)
    hf = hf_model("tiny")
    hf.save_pretrained(root / "hf")
    return {
        "archive": (root / "tiny.pt").read_bytes(),
        "hf_config": (root / "hf" / "config.json").read_bytes(),
        "hf_weights": (root / "hf" / "model.safetensors").read_bytes(),
        "ref": open_clip_outputs(ref_model, images, tokens),
        "hf_ref": hf_outputs(hf, images, tokens),
        "inputs": (images, tokens),
    }


@pytest.fixture
def server(release, monkeypatch):
    sha = hashlib.sha256(release["archive"]).hexdigest()
    path = f"/clip/models/{sha}/tiny.pt"
    served = Served(
        files={
            path: release["archive"],
            "/test/clip-tiny/resolve/main/config.json": release["hf_config"],
            "/test/clip-tiny/resolve/main/model.safetensors": release["hf_weights"],
        }
    )
    with serve(served) as base:
        monkeypatch.setitem(cache.OPENAI_NAMES, "tiny", "tiny")
        monkeypatch.setitem(cache.HUB_REPOS, "tiny", "test/clip-tiny")
        monkeypatch.setenv("RESTORE_CLIP_URL_TINY", base + path)
        monkeypatch.setattr(cache, "HUB_URL", base)
        served.archive_path = path  # type: ignore[attr-defined]
        yield served


def test_known_name_is_downloaded_with_progress_and_checksum(server, release, capsys):
    images, tokens = release["inputs"]
    model = load("tiny")
    assert_parity(model, release["ref"], images, tokens)
    cached = cache.clip_cache() / "tiny.pt"
    assert cached.read_bytes() == release["archive"]
    err = capsys.readouterr().err
    assert "tiny.pt" in err and "100%" in err
    assert server.requests == [(server.archive_path, None)]
    # From the cache the second time: no request.
    assert_parity(load("tiny"), release["ref"], images, tokens)
    assert len(server.requests) == 1


def test_corrupted_download_is_rejected_and_not_left_in_the_cache(server, release):
    data = bytearray(release["archive"])
    data[len(data) // 2] ^= 0xFF
    server.files[server.archive_path] = bytes(data)
    with pytest.raises(DownloadError) as e:
        load("tiny", progress=False)
    text = str(e.value)
    sha = hashlib.sha256(release["archive"]).hexdigest()
    cached = cache.clip_cache() / "tiny.pt"
    assert "checksum mismatch" in text and sha in text and server.archive_path in text
    assert f"put it at {cached}" in text
    assert not cached.exists() and not part_path(cached).exists()


def test_interrupted_download_is_resumed(server, release):
    server.drop_next = 1
    images, tokens = release["inputs"]
    assert_parity(load("tiny", progress=False), release["ref"], images, tokens)
    assert [r[1] is not None for r in server.requests] == [False, True]  # the second asked for the rest


def test_hub_name_is_downloaded_as_a_folder(server, release):
    images, tokens = release["inputs"]
    model = load("test/clip-tiny", progress=False)
    assert_parity(model, release["hf_ref"], images, tokens)
    folder = cache.clip_cache() / "test--clip-tiny"
    assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()
    assert {r[0] for r in server.requests} == {
        "/test/clip-tiny/resolve/main/config.json",
        "/test/clip-tiny/resolve/main/model.safetensors",
    }


def test_either_cached_form_serves_either_name(server, release):
    folder = cache.clip_cache() / "test--clip-tiny"
    folder.mkdir(parents=True)
    (folder / "config.json").write_bytes(release["hf_config"])
    (folder / "model.safetensors").write_bytes(release["hf_weights"])
    images, tokens = release["inputs"]
    assert_parity(load("tiny"), release["hf_ref"], images, tokens)  # asks for the archive first, finds the folder
    assert server.requests == []


def test_offline_makes_no_request(server, monkeypatch):
    monkeypatch.setenv("RESTORE_OFFLINE", "1")
    with pytest.raises(DownloadError) as e:
        load("tiny")
    assert "downloads are off" in str(e.value) and str(cache.clip_cache() / "tiny.pt") in str(e.value)
    assert server.requests == []
