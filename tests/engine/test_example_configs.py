"""The example configs in configs/ stay valid as the code changes."""

from __future__ import annotations

from pathlib import Path

import pytest

from restore.engine.run_config import load_run_config

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_example_config_is_valid(path):
    cfg = load_run_config(path)
    assert cfg.method.name and cfg.protocol in ("train", "b2n", "xd", "dg", "fewshot")


def test_there_are_examples():
    assert len(CONFIGS) >= 3
