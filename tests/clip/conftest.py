"""Fixtures of the CLIP tests; the reference models and writers are in load_helpers."""

from __future__ import annotations

import pytest

from restore.clip import cache


@pytest.fixture(autouse=True)
def _no_real_downloads(monkeypatch):
    """Never reach the real OpenAI or Hub servers from a test: a download that a test does not point at
    127.0.0.1 goes to a port nobody listens on."""
    monkeypatch.setattr(cache, "HUB_URL", "http://127.0.0.1:9")
    for arch in list(cache.OPENAI_NAMES):
        monkeypatch.setenv(cache._env_key(arch), f"http://127.0.0.1:9/{'0' * 64}/{cache.OPENAI_NAMES[arch]}.pt")
