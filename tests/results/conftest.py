"""Fixtures for the results tests: a fresh database per test and a helper that records a finished run."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from restore.results import RunRecord, open_results


@pytest.fixture
def db_path(tmp_path):
    return tmp_path / "results.sqlite"


@pytest.fixture
def store(db_path):
    with open_results(db_path) as s:
        yield s


def record_run(
    store,
    *,
    method: str,
    dataset: str,
    seed: int,
    metrics: Mapping[str, Any],
    protocol: str = "b2n",
    backbone: str = "ViT-B/16",
    shots: int | None = 16,
    tag: str = "",
) -> RunRecord:
    """Start and finish one run the way a trainer does."""
    config = {
        "method": method,
        "dataset": dataset,
        "seed": seed,
        "protocol": protocol,
        "backbone": backbone,
        "shots": shots,
        "tag": tag,
    }
    rec = store.start_run(
        RunRecord.new(
            method=method,
            dataset=dataset,
            protocol=protocol,
            seed=seed,
            backbone=backbone,
            shots=shots,
            config=config,
            tag=tag,
        )
    )
    return store.finish_run(rec.run_id, metrics, {"train_s": 1.5, "eval_s": 0.5, "steps": 10})
