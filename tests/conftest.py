"""Shared fixtures. Each area's own fixtures live in its test package's conftest."""

from __future__ import annotations

import pytest
import torch

from restore.engine.device import torch_threads

# Tests run on tiny models: one thread is fastest on a shared 2-core machine (measured 5x over two).
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _one_thread():
    """Every test starts at one torch thread and leaves the setting as it found it: tiny models gain nothing
    from a second thread (OpenMP's spinning made them ~5x slower on a loaded machine), and a test or run
    that sets its own thread count must not leak it into the next test."""
    with torch_threads(1):
        yield


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
