"""Issue 18, point 1: training is bit-identical from rerun to rerun and across a Ctrl-C/resume at the default
thread count (2 on the machines these tests run on), not only at one thread.

At several threads torch's CPU `index_put_(accumulate=True)` — the backward of the packed text encoder's
advanced indexing — adds floats in whatever order its threads run; the trainer switches torch to its
deterministic kernels for training on the CPU (`restore.engine.seeding.deterministic_kernels`). The world
CLIP with ten classes is the smallest model where the unordered sums show (the tiny random CLIP's tensors
stay below torch's grain size for parallel work)."""

from __future__ import annotations

import os
import signal
import warnings
from pathlib import Path

import pytest
import torch

from restore.engine.device import torch_threads
from restore.engine.trainer import Trainer, TrainSettings
from restore.methods import build_method, make_config
from tests.engine.fakes import Blobs

THREADS = 2  # the default on the 2-core machines of this project: what a user gets without OMP_NUM_THREADS
CLASSES = 10


@pytest.fixture(scope="module")
def world_clip():
    from restore.engine.backbone import load_backbone

    return load_backbone("world", torch.device("cpu"))


def _trainer(clip, folder: Path, epochs: int = 2) -> Trainer:
    torch.manual_seed(5)
    names = [f"shape {c}" for c in "abcdefghij"[:CLASSES]]
    method = build_method(make_config("maple"), clip, names, None)
    settings = TrainSettings(epochs=epochs, lr=0.01, batch_size=16, seed=2, workers=0)
    data = Blobs(n=64, classes=CLASSES, size=clip.cfg.vision.image_size)
    return Trainer(method, data, settings, checkpoint=folder / "last.pt", config_hash="h", identity={})


def _learned(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer.method.learnable_state_dict().items()}


def _assert_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert all(torch.equal(a[k], b[k]) for k in a), f"learned tensors differ by up to {worst:.3g}"


def test_two_runs_at_the_default_thread_count_are_bit_identical(world_clip, tmp_path):
    with torch_threads(THREADS):
        assert torch.get_num_threads() == THREADS
        runs = []
        for i in range(3):
            t = _trainer(world_clip, tmp_path / f"run{i}")
            result = t.fit()
            runs.append((_learned(t), [h["loss"] for h in result.history]))
    for learned, losses in runs[1:]:
        _assert_identical(runs[0][0], learned)
        assert losses == runs[0][1]


def test_a_resumed_run_at_the_default_thread_count_is_bit_identical(world_clip, tmp_path):
    with torch_threads(THREADS):
        whole = _trainer(world_clip, tmp_path / "whole")
        whole.fit()
        first = _trainer(world_clip, tmp_path / "cut")
        real, calls = first.method.compute_loss, [0]

        def compute_loss(out, labels):  # Ctrl-C while the 6th of 8 steps computes (epoch 2, step 2)
            calls[0] += 1
            if calls[0] == 6:
                os.kill(os.getpid(), signal.SIGINT)
            return real(out, labels)

        first.method.compute_loss = compute_loss
        with pytest.raises(KeyboardInterrupt):
            first.fit()
        resumed = _trainer(world_clip, tmp_path / "cut")
        result = resumed.fit(resume=True)
    assert result.resumed_from == 1
    _assert_identical(_learned(whole), _learned(resumed))


def test_training_leaves_the_deterministic_setting_as_it_found_it(world_clip, tmp_path):
    assert not torch.are_deterministic_algorithms_enabled()
    _trainer(world_clip, tmp_path / "run", epochs=1).fit()
    assert not torch.are_deterministic_algorithms_enabled()


def test_a_resume_at_another_thread_count_is_warned_about(world_clip, tmp_path):
    from restore.errors import RestoreWarning

    with torch_threads(THREADS):
        _trainer(world_clip, tmp_path / "run", epochs=1).fit()
    more = _trainer(world_clip, tmp_path / "run", epochs=1)
    with torch_threads(1), pytest.warns(RestoreWarning, match=r"resuming at 1 torch threads a run saved at 2"):
        more.fit(resume=True)
    with torch_threads(THREADS), warnings.catch_warnings():
        warnings.simplefilter("error", RestoreWarning)
        _trainer(world_clip, tmp_path / "run", epochs=1).fit(resume=True)  # the same count: no warning
