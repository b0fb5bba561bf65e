"""Where released CLIP weights live on disk, and how a missing one is fetched.

Layout under ``$RESTORE_CACHE/clip/`` (``RESTORE_CACHE`` defaults to ``~/.cache/restore``):

- OpenAI's TorchScript archives under their own file names: ``ViT-B-16.pt``;
- Hugging Face folders as ``openai--clip-vit-base-patch16/`` holding ``config.json`` + ``model.safetensors``.

Either form satisfies either kind of name (they hold the same weights); a name asks for its own form first.
Sources are overridable for mirrors and tests: ``RESTORE_CLIP_URL_VIT_B_16`` (or ``OPENAI_URLS``) replaces an
OpenAI URL; ``RESTORE_HUB_URL`` (or ``HUB_URL``) fetches Hub files over plain HTTP from another endpoint.
``RESTORE_OFFLINE=1`` (or ``HF_HUB_OFFLINE=1``) never downloads.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from restore.clip.architectures import ALIASES, canonical_name
from restore.errors import CheckpointError, DownloadError
from restore.transfer import download_file

# Architecture -> open_clip's name for it (also the file name OpenAI released it under).
OPENAI_NAMES = {"ViT-B/32": "ViT-B-32", "ViT-B/16": "ViT-B-16", "ViT-L/14": "ViT-L-14"}
HUB_REPOS = {
    "ViT-B/32": "openai/clip-vit-base-patch32",
    "ViT-B/16": "openai/clip-vit-base-patch16",
    "ViT-L/14": "openai/clip-vit-large-patch14",
}
HUB_FILES = ("config.json", "model.safetensors")
# Overrides (tests monkeypatch these, and add entries to the two tables above to serve a tiny model; users set
# the environment variables instead).
OPENAI_URLS: dict[str, str] = {}
HUB_URL: str | None = None
DEFAULT_HUB_URL = "https://huggingface.co"


def cache_root() -> Path:
    return Path(os.environ.get("RESTORE_CACHE") or "~/.cache/restore").expanduser()


def clip_cache() -> Path:
    return cache_root() / "clip"


def offline() -> bool:
    flags = (os.environ.get(v, "").strip().lower() for v in ("RESTORE_OFFLINE", "HF_HUB_OFFLINE"))
    return any(f in ("1", "true", "yes") for f in flags)


def known_names() -> list[str]:
    aliases = {a for a, c in ALIASES.items() if c in OPENAI_NAMES}
    return sorted(set(OPENAI_NAMES) | aliases | set(HUB_REPOS.values()))


def _env_key(arch: str) -> str:
    return "RESTORE_CLIP_URL_" + re.sub(r"[^A-Z0-9]+", "_", arch.upper())


@dataclass(frozen=True)
class Source:
    """One way to get an architecture's released weights: where it comes from and where it is cached."""

    arch: str
    kind: str  # "openai" (a TorchScript file) or "hub" (a Hugging Face folder)
    path: Path  # the cached file (openai) or folder (hub)
    urls: tuple[str, ...]
    sha256: str | None = None  # openai only; the Hub client verifies its own files

    def present(self) -> bool:
        if self.kind == "openai":
            return self.path.is_file()
        return all((self.path / f).is_file() for f in HUB_FILES)

    def what(self) -> str:
        if self.kind == "openai":
            return f"download {self.urls[0]} and put it at {self.path}"
        files = ", ".join(f"{u} -> {self.path / Path(u).name}" for u in self.urls)
        return f"download {files}"


def openai_source(arch: str) -> Source:
    name = OPENAI_NAMES[arch]
    url = os.environ.get(_env_key(arch)) or OPENAI_URLS.get(arch)
    if not url:
        import open_clip  # slow: the whole package (timm, model factories), only for a URL it alone knows

        url = open_clip.pretrained.get_pretrained_cfg(name, "openai")["url"]
    # OpenAI's URLs carry the file's sha256 as the folder name: .../models/<sha256>/ViT-B-16.pt
    parts = url.rstrip("/").split("/")
    sha = parts[-2] if len(parts) >= 2 and re.fullmatch(r"[0-9a-f]{64}", parts[-2]) else None
    return Source(arch, "openai", clip_cache() / f"{name}.pt", (url,), sha)


def hub_source(arch: str) -> Source:
    repo = HUB_REPOS[arch]
    base = (os.environ.get("RESTORE_HUB_URL") or HUB_URL or DEFAULT_HUB_URL).rstrip("/")
    urls = tuple(f"{base}/{repo}/resolve/main/{f}" for f in HUB_FILES)
    return Source(arch, "hub", clip_cache() / repo.replace("/", "--"), urls)


def sources(name: str) -> list[Source] | None:
    """The sources for a known name, its own form first; None when ``name`` is no released model."""
    hub_names = {repo: arch for arch, repo in HUB_REPOS.items()}
    if name in hub_names:
        arch = hub_names[name]
        found = [hub_source(arch)] + ([openai_source(arch)] if arch in OPENAI_NAMES else [])
        return found
    arch = canonical_name(name)
    if arch not in OPENAI_NAMES:
        return None
    return [openai_source(arch)] + ([hub_source(arch)] if arch in HUB_REPOS else [])


def _fetch_hub(src: Source, progress: bool) -> None:
    repo = HUB_REPOS[src.arch]
    plain = os.environ.get("RESTORE_HUB_URL") or HUB_URL
    try:
        import huggingface_hub  # optional: without it, plain HTTP
    except ImportError:
        huggingface_hub = None
    src.path.mkdir(parents=True, exist_ok=True)
    if huggingface_hub is not None and not plain:
        try:
            for f in HUB_FILES:
                huggingface_hub.hf_hub_download(repo, f, local_dir=src.path)
        except Exception as e:  # the client's errors vary by version; all mean "could not fetch"
            raise DownloadError(f"could not fetch {repo} from the Hugging Face Hub: {type(e).__name__}: {e}") from None
        return
    for url, f in zip(src.urls, HUB_FILES, strict=True):
        download_file(url, src.path / f, progress=progress)


def fetch(name: str, *, progress: bool = True) -> Source:
    """A cached source for known ``name``, downloading its own form when none is cached.

    Raises one error naming what is needed, its URL and the exact place to put it when that cannot happen.
    """
    candidates = sources(name)
    if candidates is None:
        raise CheckpointError(f"{name!r} is not a released CLIP model")
    for src in candidates:
        if src.present():
            return src
    src = candidates[0]
    if offline():
        raise DownloadError(
            f"the {src.arch} weights ({name!r}) are not in the cache {clip_cache()} and downloads are off "
            "(RESTORE_OFFLINE/HF_HUB_OFFLINE)",
            hint=src.what(),
        )
    try:
        if src.kind == "openai":
            download_file(src.urls[0], src.path, src.sha256, progress=progress)
        else:
            _fetch_hub(src, progress)
    except DownloadError as e:
        raise DownloadError(
            f"the {src.arch} weights ({name!r}) are not in the cache and could not be downloaded: {e.message}",
            hint=f"{src.what()}, or pass the path of a checkpoint you have",
        ) from None
    return src


def describe_known() -> str:
    return ", ".join(known_names())
