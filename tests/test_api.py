"""The Python API mirrors the command line: run, train, load_run, evaluate, zeroshot."""

from __future__ import annotations

import json

import pytest
import torch

import restore
from restore.errors import ConfigError
from tests.engine.fakes import make_tree

TINY = {"backbone": "random:tiny", "workers": 0, "quiet": True, "overrides": ["data.eval_batch_size=16"]}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return make_tree(tmp_path_factory.mktemp("data"))


def test_run_load_run_and_evaluate(data_root, tmp_path):
    result = restore.run(
        "b2n", method="maple", dataset="dtd", root=data_root, shots=4, seed=2, epochs=1, batch_size=4,
        out=tmp_path / "runs", db="none", options={"depth": 2}, **TINY,
    )  # fmt: skip
    assert isinstance(result, restore.RunResult) and result.status == "finished"
    assert result.metrics["hm"] == pytest.approx(
        2 * result.top1("base") * result.top1("novel") / max(result.top1("base") + result.top1("novel"), 1e-12)
    )
    assert result.config.method.depth == 2 and result.config.seed == 2
    assert json.loads((result.run_dir / "metrics.json").read_text())["metrics"] == result.metrics

    loaded = restore.load_run(result.run_dir)
    assert isinstance(loaded, restore.LoadedRun)
    assert loaded.config.to_dict() == result.config.to_dict() and loaded.metrics == result.metrics
    assert loaded.method.name == "maple" and len(loaded.method.classnames) == 6
    images = torch.randn(2, 3, 32, 32)
    assert loaded.method.predict(images).shape == (2, 6)  # the 3 base classes it was trained on and the 3 novel

    again = restore.evaluate(result.run_dir, dataset="dtd", root=data_root, protocol="b2n", device="cpu")
    assert again["base"] == result.metrics["base"] and again["novel"] == result.metrics["novel"]


def test_train_is_the_plain_protocol_and_zeroshot_needs_no_run(data_root, tmp_path):
    result = restore.train(method="coop", dataset="dtd", root=data_root, shots=2, epochs=1, out=tmp_path, db="none",
                           options={"n_ctx": 4}, **TINY)  # fmt: skip
    assert result.config.protocol == "train" and set(result.metrics) == {"test", "shift"}
    assert result.run_dir.relative_to(tmp_path).parts[:3] == ("train", "dtd", "coop")
    scores = restore.zeroshot(backbone="random:tiny", dataset="dtd", root=data_root, device="cpu")
    assert scores["test"]["n"] == 6 * 4


def test_unknown_settings_are_refused_with_the_valid_ones(data_root):
    with pytest.raises(ConfigError) as info:
        restore.run("b2n", method="coop", dataset="dtd", root=data_root, learning_rate=0.1)
    assert "unknown setting learning_rate" in info.value.message and "lr" in info.value.hint
    with pytest.raises(ConfigError, match=r"unknown config key method \(coop\)\.depth"):
        restore.run("b2n", method="coop", dataset="dtd", root=data_root, options={"depth": 3}, **TINY)
