"""Pretraining: config round trip, targets, loss, schedule, and a short run that learns something."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from restore.errors import ConfigError
from restore.world.generator import WorldConfig, sample_scenes
from restore.world.pretrain import (
    PretrainConfig,
    consistency,
    contrastive_loss,
    lr_at,
    make_batch,
    pretrain,
)
from restore.world.world_clip import ModelSize


def test_config_round_trips_through_yaml(tmp_path):
    cfg = PretrainConfig(seed=3, steps=7, model=ModelSize(vision_layers=2), world=WorldConfig(two_object_prob=0.1))
    path = tmp_path / "c.yaml"
    path.write_text(cfg.to_yaml())
    assert PretrainConfig.from_yaml(path) == cfg


def test_config_errors_say_what_is_wrong(tmp_path):
    with pytest.raises(ConfigError, match="unknown pretraining config keys"):
        PretrainConfig.from_dict({"stepz": 3})
    with pytest.raises(ConfigError, match="image size"):
        PretrainConfig(model=ModelSize(image_size=32))
    with pytest.raises(ConfigError, match="no pretraining config"):
        PretrainConfig.from_yaml(tmp_path / "missing.yaml")


def _describes(scene_i, scene_j, size: int) -> bool:
    """Independent reading of 'caption j is true of image i', object by object."""
    if len(scene_i.objects) != len(scene_j.objects):
        return False
    m = scene_j.mentions
    if m.background and scene_i.background != scene_j.background:
        return False
    orders = [(0,), (0,)] if len(scene_j.objects) == 1 else [(0, 1), (1, 0)]
    for order in orders:
        ok = True
        for s, t in enumerate(order):
            a, b = scene_i.objects[t], scene_j.objects[s]
            ok &= a.shape == b.shape
            ok &= not m.colour[s] or a.colour == b.colour
            ok &= not m.pattern[s] or a.pattern == b.pattern
            ok &= not m.size[s] or a.size == b.size
            ok &= not m.position[s] or a.position(size) == b.position(size)
        if ok:
            return True
    return False


def test_consistency_matches_an_independent_reading_of_the_captions():
    scenes = sample_scenes(2, range(300), WorldConfig(two_object_prob=0.3))
    got = consistency(scenes, 48).numpy()
    want = np.array([[_describes(a, b, 48) for b in scenes] for a in scenes])
    assert np.array_equal(got, want)
    assert got.diagonal().all()
    assert got.sum() > len(scenes)  # some captions do fit other images


def test_loss_with_one_match_per_row_is_clip_loss_and_soft_targets_spread_mass():
    torch.manual_seed(0)
    logits = torch.randn(6, 6)
    labels = torch.arange(6)
    clip = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2
    assert torch.allclose(contrastive_loss(logits, None), clip)
    assert torch.allclose(contrastive_loss(logits, torch.eye(6, dtype=torch.bool)), clip)
    targets = torch.eye(6, dtype=torch.bool)
    targets[0, 1] = targets[1, 0] = targets[2, 0] = True  # caption 0 fits images 0 and 2; image 0 fits 0, 1
    rows, cols = F.log_softmax(logits, 1), F.log_softmax(logits, 0)
    to_text = sum(-sum(rows[i, j] for j in range(6) if targets[i, j]) / int(targets[i].sum()) for i in range(6)) / 6
    to_image = sum(-sum(cols[i, j] for i in range(6) if targets[i, j]) / int(targets[:, j].sum()) for j in range(6)) / 6
    assert contrastive_loss(logits, targets).item() == pytest.approx(((to_text + to_image) / 2).item(), rel=1e-6)


def test_lr_schedule_warms_up_then_decays_to_its_floor():
    cfg = PretrainConfig(steps=100, warmup_steps=10, lr=1.0, final_lr_ratio=0.1)
    assert lr_at(cfg, 0) == pytest.approx(0.1)
    assert lr_at(cfg, 9) == pytest.approx(1.0)
    assert lr_at(cfg, 10) == pytest.approx(1.0)
    assert lr_at(cfg, 55) == pytest.approx(0.55)
    assert lr_at(cfg, 100) == pytest.approx(0.1)


def test_batches_are_a_function_of_config_and_step():
    cfg = PretrainConfig(batch_size=8)
    a, b = make_batch(cfg, 3), make_batch(cfg, 3)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a[0], make_batch(cfg, 4)[0])


@pytest.mark.integration
def test_a_short_pretraining_run_beats_its_random_initialisation():
    # One-layer towers on easy scenes: colour is learned within ~250 steps (about 20 s on 1 thread).
    size = ModelSize(48, 8, 32, 1, 32, 1, 32, head_width=16)
    cfg = PretrainConfig(
        steps=250,
        batch_size=32,
        lr=5e-3,
        warmup_steps=10,
        eval_every=250,
        eval_per_class=10,
        threads=1,
        model=size,
        curriculum_start=1.0,
        curriculum_end=1.0,
        curriculum_steps=1,
    )
    result = pretrain(cfg, tasks=["color_shape"])
    before, after = result.history[0]["color_shape"], result.history[-1]["color_shape"]
    assert after > before + 0.05, result.history
    assert result.final["color_shape"] > 2 / 36  # twice chance on the full test split


def test_an_interrupted_run_resumes_to_the_same_weights(tmp_path, tiny_size):
    cfg = PretrainConfig(steps=4, batch_size=8, eval_every=2, eval_per_class=1, threads=1, model=tiny_size)
    straight = pretrain(cfg, tasks=["shapes"])

    def stop_at_step_4(message: str) -> None:
        if message.startswith("step      4"):
            raise KeyboardInterrupt  # dies after the step-2 state was saved

    with pytest.raises(KeyboardInterrupt):
        pretrain(cfg, tasks=["shapes"], state_dir=tmp_path, log=stop_at_step_4)
    messages: list[str] = []
    resumed = pretrain(cfg, tasks=["shapes"], state_dir=tmp_path, log=messages.append)
    assert messages[0].startswith("resuming from step 2")
    for a, b in zip(straight.model.state_dict().values(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert [h["step"] for h in resumed.history] == [0, 2, 4]
    other = PretrainConfig(steps=4, batch_size=8, eval_every=2, eval_per_class=1, seed=1, model=tiny_size)
    messages.clear()
    pretrain(other, tasks=["shapes"], state_dir=tmp_path, log=messages.append)
    assert "another config" in messages[0]


def test_the_curriculum_moves_from_easy_scenes_to_the_full_world():
    from restore.world.pretrain import world_at

    cfg = PretrainConfig(curriculum_start=0.9, curriculum_end=0.2, curriculum_steps=100)
    assert world_at(cfg, 0).easy_prob == pytest.approx(0.9)
    assert world_at(cfg, 50).easy_prob == pytest.approx(0.55)
    assert world_at(cfg, 100).easy_prob == world_at(cfg, 5000).easy_prob == pytest.approx(0.2)
    assert world_at(PretrainConfig(), 0) == PretrainConfig().world
    scenes = sample_scenes(0, range(400), world_at(cfg, 0))
    easy = [s for s in scenes if len(s.objects) == 1 and s.objects[0].pattern == 0 and s.objects[0].size > 0]
    assert len(easy) > 0.85 * 400
