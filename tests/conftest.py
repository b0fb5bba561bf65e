"""Shared fixtures. Each area's own fixtures live in its test package's conftest."""

from __future__ import annotations

import pytest
import torch

# Tests run on tiny models: one thread is fastest on a shared 2-core machine (measured 5x over two).
torch.set_num_threads(1)


@pytest.fixture
def tiny_clip():
    """A randomly initialised tiny CLIP in eval mode, the same for every test (seeded)."""
    from restore.clip import build_model, get_config

    torch.manual_seed(0)
    return build_model(get_config("tiny")).eval()


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """No test reads or writes the user's real cache."""
    monkeypatch.setenv("RESTORE_CACHE", str(tmp_path_factory.mktemp("restore-cache")))
