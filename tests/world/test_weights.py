"""The shipped world CLIP: small, self-describing, and reproducing the zero-shot numbers of its model card."""

from __future__ import annotations

import json

import pytest
import torch

from restore.errors import CheckpointError
from restore.world.accuracy import base_novel_zero_shot
from restore.world.pretrain import PretrainConfig, evaluate
from restore.world.tasks import PROBES, REGIME, TASKS, task_images
from restore.world.weights import SHIPPED, WEIGHTS_DIR, load_clip, load_world_clip, read_metadata, save_clip
from restore.world.world_clip import world_vocabulary

RECORD = WEIGHTS_DIR / "world_clip.json"


def test_shipped_weights_are_small_and_carry_the_config_that_made_them():
    assert SHIPPED.exists(), "the world CLIP weights must ship in the repository"
    assert SHIPPED.stat().st_size <= 25 * 2**20
    meta = read_metadata(SHIPPED)
    shipped_cfg = PretrainConfig.from_yaml(WEIGHTS_DIR / "world_clip.yaml")
    assert PretrainConfig.from_dict(json.loads(meta["restore_world_pretrain"])) == shipped_cfg
    model = load_world_clip()
    assert model.cfg == shipped_cfg.model.clip_config()
    assert model.context_length == shipped_cfg.model.context_length


def test_every_world_token_has_its_own_embedding_row():
    model = load_world_clip()
    rows = model.token_embedding.lookup[torch.tensor(world_vocabulary())]
    assert (rows > 0).all() and len(set(rows.tolist())) == len(world_vocabulary())


@pytest.mark.integration
def test_shipped_weights_reproduce_the_model_card_numbers():
    torch.set_num_threads(2)
    record = json.loads(RECORD.read_text())
    card = (WEIGHTS_DIR / "MODEL_CARD.md").read_text()
    measured = evaluate(load_world_clip(), {n: task_images(n, "test") for n in PROBES})
    assert set(measured) == set(record["zero_shot"])
    for name, acc in measured.items():
        # Another CPU's kernels can flip a few near-tied test images; the card's number is the recorded one.
        assert acc == pytest.approx(record["zero_shot"][name], abs=0.01), name
        assert acc >= 3 / len(TASKS[name].classes), f"{name}: {acc:.3f} is under 3x chance"
        assert f"| {name} | {len(TASKS[name].classes)} |" in card
        assert f"{100 * record['zero_shot'][name]:.1f}" in card


@pytest.mark.integration
def test_the_regime_numbers_of_the_model_card_are_measured_and_in_the_regime():
    """The card's downstream table is recomputed from the weights; the regime is what the issue asked for:
    average zero-shot base <= 70 % (real CLIP over 11 datasets: 69.3), novel >= 3x chance on every task."""
    torch.set_num_threads(2)
    card = (WEIGHTS_DIR / "MODEL_CARD.md").read_text()
    model = load_world_clip()
    bases = []
    for name in REGIME:
        base, novel = base_novel_zero_shot(model, name)
        n_novel = len(TASKS[name].classes) // 2
        assert novel >= 3 / n_novel, name
        regime_table = card.split("## The downstream regime", 1)[1]
        row = next(line for line in regime_table.splitlines() if line.startswith(f"| {name} | "))
        assert f"| {100 * base:.1f} | {100 * novel:.1f} |" in row
        bases.append(base)
    assert sum(bases) / len(bases) <= 0.70


def test_save_and_load_round_trip_and_refuse_foreign_files(tmp_path, tiny_size):
    from restore.world.world_clip import build_world_clip

    torch.manual_seed(0)
    model = build_world_clip(tiny_size)
    path = save_clip(model, tmp_path / "m.safetensors")
    back = load_clip(path)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), back.state_dict().values(), strict=True))
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(CheckpointError, match="carries no model config"):
        load_clip(tmp_path / "foreign.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a file")
    with pytest.raises(CheckpointError, match="not a readable"):
        load_clip(tmp_path / "junk.safetensors")
