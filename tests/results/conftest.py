"""Fixtures for the results tests: a fresh database per test and a helper that records a finished run."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
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


METHODS = ("coop", "maple")
SEEDS = (1, 2)
DATASETS = ("dtd", "eurosat")
LAYERS = 4


@pytest.fixture
def filled_db(db_path):
    """2 methods x 2 seeds x 2 datasets of base-to-novel runs on ViT-B/16 and on `tiny`, a cross-dataset run,
    and a failed run. Returns (path, numbers) with numbers[backbone][method][dataset][seed] = (base, novel)."""
    rng = np.random.default_rng(0)
    numbers: dict = {}
    with open_results(db_path) as store:
        for backbone in ("ViT-B/16", "tiny"):
            for method in METHODS:
                for dataset in DATASETS:
                    for seed in SEEDS:
                        base, novel = (round(float(x), 2) for x in rng.uniform(40, 95, size=2))
                        numbers.setdefault(backbone, {}).setdefault(method, {}).setdefault(dataset, {})[seed] = (
                            base,
                            novel,
                        )
                        metrics = {"base": {"top1": base, "n": 300}, "novel": {"top1": novel, "n": 280}}
                        if method == "maple":
                            metrics["shift"] = {
                                "vision": [round(float(x), 3) for x in rng.uniform(0, 2, LAYERS)],
                                "text": [round(float(x), 3) for x in rng.uniform(0, 1, LAYERS)],
                                "discrepancy": 0.2,
                            }
                        record_run(store, method=method, dataset=dataset, seed=seed, metrics=metrics, backbone=backbone)
        for seed in SEEDS:
            record_run(
                store,
                method="coop",
                dataset="imagenet",
                seed=seed,
                protocol="xd",
                metrics={"imagenet": {"top1": 70.0 + seed}, "dtd": {"top1": 40.0 + seed}, "eurosat": {"top1": 45.0}},
            )
        failed = store.start_run(
            RunRecord.new(method="coop", dataset="dtd", protocol="b2n", seed=9, backbone="ViT-B/16", config={"x": 9})
        )
        store.fail_run(failed.run_id, "loss became NaN")
    return db_path, numbers
