"""Evaluation: top-1/top-5 against a per-image computation, class texts encoded once per evaluation."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import TensorDataset

from restore.engine.evaluate import evaluate
from restore.errors import DataError
from restore.methods import build_method, make_config
from tests.engine.fakes import Blobs


def _reference(method, images, labels, k):
    """Accuracy from the plain forward pass, one image at a time (no cached class features, no batching)."""
    hit1 = hitk = 0
    with torch.no_grad():
        for x, y in zip(images, labels, strict=True):
            logits = method(x[None]).logits[0]
            ranked = torch.argsort(logits, descending=True).tolist()
            hit1 += ranked[0] == int(y)
            hitk += int(y) in ranked[:k]
    return 100.0 * hit1 / len(labels), 100.0 * hitk / len(labels)


@pytest.mark.parametrize("name", ["coop", "maple", "cocoop"])
def test_accuracy_matches_a_per_image_computation(tiny_clip, classnames, name):
    torch.manual_seed(0)
    method = build_method(make_config(name), tiny_clip, classnames).eval()
    with torch.no_grad():  # move the prompts away from their initialisation so classes differ
        for p in method.learnable_parameters():
            p.add_(torch.randn_like(p) * 0.5)
    data = Blobs(n=30)
    images = torch.stack([data.images[i] for i in range(30)])
    labels = data.labels
    calls = []
    original = method.class_features
    method.class_features = lambda: calls.append(1) or original()  # type: ignore[method-assign]
    r = evaluate(method, TensorDataset(images, labels), classnames, batch_size=7)
    top1, top5 = _reference(method, images, labels, 5)
    assert r["n"] == 30 and r["classes"] == 6
    assert r["top1"] == pytest.approx(top1, abs=1e-9)
    assert r["top5"] == pytest.approx(top5, abs=1e-9)
    assert len(calls) == 1  # once per evaluation, not per batch (5 batches here)


def test_top5_is_capped_at_the_class_count_and_empty_sets_are_refused(tiny_clip):
    method = build_method(make_config("coop"), tiny_clip, ["a", "b", "c"]).eval()
    data = TensorDataset(torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0]))
    assert evaluate(method, data, ["a", "b", "c"])["top5"] == 100.0
    with pytest.raises(DataError, match="no images"):
        evaluate(method, TensorDataset(torch.zeros(0, 3, 32, 32), torch.zeros(0, dtype=torch.long)), ["a", "b"])
