"""The trainer: what it optimises, its checkpoint, resuming, refusing another config, non-finite losses."""

from __future__ import annotations

import pytest
import torch

from restore.engine.schedule import lr_at_epoch
from restore.engine.train_checkpoint import load_training_checkpoint
from restore.engine.trainer import Trainer, TrainSettings, make_train_loader
from restore.errors import CheckpointError, TrainingError
from restore.methods import build_method, make_config
from tests.engine.fakes import Blobs

SETTINGS = {"epochs": 3, "lr": 0.01, "batch_size": 8, "seed": 3}


def _method(tiny_clip, classnames, name="coop", **options):
    torch.manual_seed(11)
    return build_method(make_config(name, options), tiny_clip, classnames, "DescribableTextures")


def _trainer(method, tmp_path, data=None, settings=None, **kw):
    s = TrainSettings(**{**SETTINGS, **(settings or {})})
    kw.setdefault("config_hash", "h1")
    kw.setdefault("identity", {"optim": {"lr": s.lr}})
    return Trainer(method, data or Blobs(), s, checkpoint=tmp_path / "last.pt", **kw)


def test_sgd_over_learnable_parameters_only_with_the_schedule(tiny_clip, classnames, tmp_path):
    method = _method(tiny_clip, classnames, "maple")
    backbone = {k: v.clone() for k, v in method.clip.state_dict().items()}
    start = method.learnable_state_dict()
    t = _trainer(method, tmp_path)
    assert {id(p) for p in t.optimizer.param_groups[0]["params"]} == {id(p) for p in method.learnable_parameters()}
    group = t.optimizer.param_groups[0]
    assert (group["momentum"], group["weight_decay"]) == (0.9, 5e-4)
    result = t.fit()
    assert [h["lr"] for h in result.history] == [lr_at_epoch(e, lr=0.01, epochs=3) for e in range(3)]
    assert result.steps == 3 * (48 // 8)
    assert all(torch.equal(v, backbone[k]) for k, v in method.clip.state_dict().items())
    changed = [k for k, v in method.learnable_state_dict().items() if not torch.equal(v, start[k])]
    assert changed and set(changed) == set(start)  # every learnable tensor moved


def test_checkpoint_is_plain_data_and_has_what_a_resume_needs(tiny_clip, classnames, tmp_path):
    method = _method(tiny_clip, classnames, "promptsrc")
    _trainer(method, tmp_path, settings={"epochs": 2}).fit()
    raw = torch.load(tmp_path / "last.pt", weights_only=True)  # no pickled objects
    assert raw["epoch"] == 2 and raw["global_step"] == 12 and raw["config_hash"] == "h1"
    assert set(raw) >= {"learnable", "optimizer", "scaler", "schedule", "rng", "method_state", "history"}
    assert set(raw["rng"]) >= {"python", "numpy", "torch"}
    for k, v in method.learnable_state_dict().items():
        assert torch.equal(raw["learnable"][k], v)
    # PromptSRC's Gaussian aggregation state travels with the checkpoint.
    assert raw["method_state"]["gpa_epochs_seen"] == 2 and raw["method_state"]["gpa_sum"] is not None
    assert len(raw["optimizer"]["state"]) == len(method.learnable_parameters())  # momentum buffers


@pytest.mark.parametrize("name", ["coop", "promptsrc", "restore_m"])
def test_resume_after_an_epoch_equals_an_uninterrupted_run(tiny_clip, classnames, tmp_path, name):
    full = _method(tiny_clip, classnames, name)
    _trainer(full, tmp_path / "a").fit()

    _trainer(_method(tiny_clip, classnames, name), tmp_path / "b").fit(until_epoch=1)
    torch.manual_seed(999)  # a new process: other generator states, a freshly built method
    resumed = _method(tiny_clip, classnames, name)
    result = _trainer(resumed, tmp_path / "b").fit(resume=True)
    assert result.resumed_from == 1 and result.epochs == 3
    for k, v in full.learnable_state_dict().items():
        assert torch.equal(resumed.learnable_state_dict()[k], v), k


def test_resume_with_another_config_is_refused(tiny_clip, classnames, tmp_path):
    method = _method(tiny_clip, classnames)
    _trainer(method, tmp_path, settings={"epochs": 1}).fit()
    other = _trainer(_method(tiny_clip, classnames), tmp_path, config_hash="h2", identity={"optim": {"lr": 0.5}})
    with pytest.raises(CheckpointError, match=r"other settings \(optim.lr: 0.01 in the checkpoint, 0.5 now\)"):
        other.fit(resume=True)


def test_a_damaged_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "last.pt"
    path.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(CheckpointError, match="not a readable training checkpoint"):
        load_training_checkpoint(path)


def test_non_finite_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tiny_clip, classnames, tmp_path):
    data = Blobs()
    t = _trainer(_method(tiny_clip, classnames), tmp_path, data=data)
    t.fit(until_epoch=1)
    saved = (tmp_path / "last.pt").read_bytes()
    data.nan_at = 7  # from now on image 7 is NaN: the batch that holds it has a NaN loss
    with pytest.raises(TrainingError) as info:
        t.fit()
    message = info.value.message
    assert "the loss became nan at epoch 2, step" in message
    assert "the last finite loss was" in message
    assert f"the checkpoint of epoch 1 is kept at {tmp_path / 'last.pt'}" in message
    assert (tmp_path / "last.pt").read_bytes() == saved
    assert torch.load(tmp_path / "last.pt", weights_only=True)["epoch"] == 1


def test_non_finite_loss_in_the_first_epoch_writes_no_checkpoint(tiny_clip, classnames, tmp_path):
    with pytest.raises(TrainingError, match="the loss became nan at epoch 1"):
        _trainer(_method(tiny_clip, classnames), tmp_path, data=Blobs(nan_at=0)).fit()
    assert not (tmp_path / "last.pt").exists()


def test_epoch_loader_order_depends_only_on_seed_and_epoch():
    data = [(torch.zeros(1), i) for i in range(20)]  # item i has label i: the labels show the order

    def order(epoch: int, seed: int = 1) -> list[int]:
        return [i for _, y in make_train_loader(data, 4, seed=seed, epoch=epoch, workers=0) for i in y.tolist()]

    torch.manual_seed(0)
    a = order(2)
    torch.manual_seed(12345)  # the global generator does not change the order
    assert order(2) == a
    assert order(3) != a and order(2, seed=2) != a
    # Dassl's drop_last: the incomplete last batch is dropped when there is a full one.
    assert len(make_train_loader(data[:10], 4, seed=1, epoch=0, workers=0)) == 2
    assert len(make_train_loader(data[:3], 4, seed=1, epoch=0, workers=0)) == 1


def test_worker_augmentations_replay_exactly_for_the_same_seed_and_epoch():
    data = Blobs(n=12)  # each item adds noise from the (worker's) global generator, like an augmentation

    def batches(epoch: int) -> list[torch.Tensor]:
        return [x for x, _ in make_train_loader(data, 4, seed=1, epoch=epoch, workers=2)]

    first, again = batches(1), batches(1)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not torch.equal(torch.cat(first).sort(0).values, torch.cat(batches(2)).sort(0).values)
