"""MMRL's shift profile (the representation blocks' own in-block shift, not CLIP's prompt-free towers) and
RESTORE on MMRL: the regulariser reads the representation tokens' shift, the surgery adapters act on the
class-token and text features, fs_weight 0 with no surgery is MMRL itself, and an engine run logs fs and α."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
import yaml

from restore.analysis.shift import measure_shifts
from restore.clip.model import ShiftRequest
from restore.errors import ConfigError
from restore.methods import build_method, make_config
from restore.methods.feature_shift import activation_shifts
from tests.methods.conftest import CLASSNAMES

SETTINGS = {"rep_start": 2, "rep_dim": 24, "n_rep_tokens": 3, "alpha": 0.6, "reg_weight": 2.0}
ADAPTERS = ("image_adapter.", "text_adapter.")


def _build(clip, name: str, **values):
    torch.manual_seed(2)
    method = build_method(make_config(name, {**SETTINGS, **values}), clip, CLASSNAMES)
    with torch.no_grad():  # maps away from their shared initialisation, as after some training
        for m in (*method.rep.to_text, *method.rep.to_vision):
            m.weight.normal_(0, 0.2)
            m.bias.normal_(0, 0.1)
    return method


@pytest.mark.parametrize("normalisation", ["rms", "relative"])
def test_mmrl_profile_is_the_shift_its_own_forward_reports(tiny_clip, images, normalisation):
    method = _build(tiny_clip, "mmrl").eval()
    with torch.no_grad():
        out = method(images, shift=ShiftRequest())
    vision = activation_shifts(out.vision_shifts, normalisation)
    text = activation_shifts(out.text_shifts, normalisation)
    # two batches: the size-weighted mean of their batch means is the mean over all four images
    profile = measure_shifts(method, [images[:1], images[1:]], normalisation=normalisation)
    assert profile.images == 4 and profile.measure == f"activation/{normalisation}"
    assert profile.vision == pytest.approx([0.0, float(vision[1]), float(vision[2])], rel=1e-5)
    assert profile.text == pytest.approx([0.0, float(text[1]), float(text[2])], rel=1e-5)
    # rep_start 2 (1-based): blocks 1 and 2 carry representation tokens, block 0 does not
    assert [v > 0 for v in profile.vision] == [False, True, True]
    assert [t > 0 for t in profile.text] == [False, True, True]


def test_restore_mmrl_tunes_both_towers_and_refuses_the_prompt_gram_measure(tiny_clip):
    assert _build(tiny_clip, "mmrl").tuned_towers() == {"vision", "text"}
    for values in ({"shift_measure": "parameter"}, {"recipe": "released"}):
        with pytest.raises(ConfigError) as err:
            build_method(make_config("restore_mmrl", {**SETTINGS, **values}), tiny_clip, CLASSNAMES)
        assert err.value.hint and err.value.message == (
            "RESTORE's shift_measure: parameter reads the Gram norm of deep prompts, which 'restore_mmrl' does not have"
        )
    with pytest.raises(ConfigError) as err:
        build_method(make_config("restore_mmrl", {**SETTINGS, "surgery": "released"}), tiny_clip, CLASSNAMES)
    assert err.value.message.startswith("RESTORE's surgery: released reads the Gram norm of deep prompts")


def test_without_its_regulariser_and_surgery_restore_mmrl_is_mmrl(tiny_clip, images):
    mmrl = _build(tiny_clip, "mmrl")
    restore = _build(tiny_clip, "restore_mmrl", fs_weight=0.0, surgery="none")
    ours, theirs = restore.learnable_state_dict(), mmrl.learnable_state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert restore.shift_request is None and len(restore.losses) == len(mmrl.losses) == 1
    with torch.no_grad():
        for mode in (True, False):
            mmrl.train(mode)
            restore.train(mode)
            assert torch.equal(restore(images).logits, mmrl(images).logits)
            assert torch.equal(restore(images).measured["logits_rep"], mmrl(images).measured["logits_rep"])


def test_restore_mmrl_regularises_the_representation_shift_and_adapts_both_features(tiny_clip, images, labels):
    method = _build(tiny_clip, "restore_mmrl", fs_weight=1.0).train()
    assert method.restore_settings["shift_measure"] == "activation" and method.restore_settings["surgery"] == "guided"
    out = method(images)  # training measures the shift at every representation block
    vision, text = method.shift_measure(out)
    assert sorted(vision) == sorted(text) == [1, 2]
    expected_fs = sum((vision[i] - text[i]) ** 2 for i in (1, 2))
    # the surgery adapters: the image one on the class-token feature, the text one on each class's feature
    torch.testing.assert_close(out.image_features, F.normalize(method.image_adapter(out.raw_image_features), dim=-1))
    torch.testing.assert_close(out.text_features, F.normalize(method.text_adapter(out.raw_text_features), dim=-1))
    total, logs = method.compute_loss(out, labels)
    assert logs["fs"] == pytest.approx(float(expected_fs), rel=1e-6) and logs["fs"] > 0
    assert {"ce", "ce_rep", "reg_image", "reg_text", "alpha_v", "alpha_t"} <= set(logs)
    # L_fs alone reaches the representation tokens and their maps (through the in-block shift), nothing else
    fs = method.losses[-1](method, out, labels)["fs"]
    learnable = [p for p in method.parameters() if p.requires_grad]
    grads = torch.autograd.grad(fs, learnable, allow_unused=True, retain_graph=True)
    named = [n for n, p in method.named_parameters() if p.requires_grad]
    reached = {n for n, g in zip(named, grads, strict=True) if g is not None and float(g.abs().sum()) > 0}
    assert reached == {n for n in named if n.startswith(("rep.tokens", "rep.to_text", "rep.to_vision"))}
    # the whole loss reaches exactly MMRL's parameters and the surgery adapters; the backbone none
    total.backward()
    got = {n for n, p in method.named_parameters() if p.grad is not None and float(p.grad.abs().sum()) > 0}
    assert got == {n for n, _ in method.named_parameters() if n.startswith(("rep.", *ADAPTERS))}
    assert all(p.grad is None for p in tiny_clip.parameters())
    # evaluation: the cached class features give the forward's logits (the text adapter applied once)
    method.eval()
    with torch.no_grad():
        torch.testing.assert_close(method.predict(images, method.class_features()), method(images).logits)


@pytest.fixture(scope="module")
def restore_mmrl_run(tmp_path_factory):
    from restore.engine.run_config import load_run_config
    from restore.engine.runs import run
    from tests.engine.fakes import TINY, make_tree

    data = make_tree(tmp_path_factory.mktemp("data"))
    values = {**TINY, "method": "restore_mmrl", "protocol": "b2n", "data.dataset": "dtd", "data.root": data,
              "out": tmp_path_factory.mktemp("runs"), "optim.epochs": 2, "data.batch_size": 4, "data.shots": 4,
              "method.rep_dim": 32}  # fmt: skip
    return run(load_run_config(None, values, [])).run_dir


def test_a_restore_mmrl_run_logs_fs_and_alpha_and_records_the_representation_shifts(restore_mmrl_run):
    config = yaml.safe_load((restore_mmrl_run / "config.yaml").read_text())
    method = config["method"]
    assert method["reg_weight"] == 6.0 and method["fs_weight"] == 0.5  # MMRL's and RESTORE's DTD values
    assert (method["vision_ratio"], method["text_ratio"], method["surgery"]) == (0.15, 0.1, "guided")
    assert config["optim"]["optimizer"] == "adamw"  # MMRL's schedule
    steps = [json.loads(line) for line in (restore_mmrl_run / "scalars.jsonl").read_text().splitlines()]
    assert len(steps) == 6 and all({"fs", "alpha_v", "alpha_t", "shift_v", "shift_t"} <= set(s) for s in steps)
    # the representation tokens shift from the first step, so the guided α calibrates there at DTD's ratios
    assert steps[0]["shift_v"] > 0 and steps[0]["shift_t"] > 0 and steps[0]["fs"] > 0
    assert (steps[0]["alpha_v"], steps[0]["alpha_t"]) == pytest.approx((0.15, 0.1))
    assert steps[-1]["alpha_v"] != pytest.approx(0.15)  # and then follows the shift
    shift = json.loads((restore_mmrl_run / "metrics.json").read_text())["metrics"]["shift"]
    # rep_start 6 capped at the tiny model's last block: the only block with representation tokens
    assert [v > 0 for v in shift["vision"]] == [False, False, True]
    assert [t > 0 for t in shift["text"]] == [False, False, True]


def test_analyze_profiles_the_run_as_it_recorded(restore_mmrl_run, tmp_path):
    from restore.cli import main

    out = tmp_path / "analysis"
    assert main(["analyze", str(restore_mmrl_run), "--out", str(out), "--tsne-images", "8"]) == 0
    (ours,) = json.loads((out / "analysis.json").read_text())["runs"]
    recorded = json.loads((restore_mmrl_run / "metrics.json").read_text())["metrics"]["shift"]
    assert ours["method"] == "restore_mmrl" and ours["shift"]["total_vision"] > 0
    assert ours["shift"]["vision"] == pytest.approx(recorded["vision"], rel=1e-5)
    assert ours["shift"]["text"] == pytest.approx(recorded["text"], rel=1e-5)
