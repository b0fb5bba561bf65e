"""DePT: the CAT head and its loss against a computation written out here, the head's learning-rate multiplier,
fused logits on the training classes and the CLIP head alone on any other class set (also one as large as the
base set), the training classes surviving a checkpoint and a `restore eval` in a fresh process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from restore.errors import ConfigError
from restore.methods import build_method, make_config
from restore.methods.dept import DePTModel, DePTPromptSRCModel
from restore.methods.heads import base_rows
from restore.methods.model_file import load_method, read_method, save_method
from tests.methods.conftest import CLASSNAMES, train_steps

NOVEL = ["zebra", "violin", "snow_leopard", "canoe", "tulip"]  # as many classes as CLASSNAMES, none shared
SRC = Path(__file__).resolve().parents[2] / "src"


def _dept(name: str, clip, classes=CLASSNAMES, **values):
    torch.manual_seed(1)
    method = build_method(make_config(name, values), clip, classes)
    with torch.no_grad():  # a head away from its initialisation, so every term matters
        head = method.dept_head
        head.image.scale.uniform_(0.5, 1.5)
        head.image.bias.normal_(0, 0.1)
        head.text.scale.uniform_(0.5, 1.5)
        head.text.bias.normal_(0, 0.1)
        head.linear.weight.normal_(0, 0.3)
        head.linear.bias.normal_(0, 0.3)
    return method


def _base_method(dept, clip, classes):
    """The base method (MaPLe) with the DePT model's prompts: the CLIP head DePT must leave alone."""
    fields = {k: getattr(dept.config, k) for k in ("n_ctx", "depth", "ctx_init")}
    base = build_method(make_config("maple", fields), clip, classes)
    base.load_learnable_state_dict({k: v for k, v in dept.learnable_state_dict().items() if "dept_head" not in k})
    return base.eval()


def test_the_loss_is_the_weighted_clip_and_cat_cross_entropies(tiny_clip, images, labels):
    method = _dept("dept_maple", tiny_clip, dept_weight=0.6).train()
    out = method(images)
    total, logs = method.compute_loss(out, labels)

    # Written out: CAT = Linear(x * s + b) per modality on the unnormalised features; text rows of each label
    # first, then the images; the CLIP head is the cosine logits of the prompted model.
    head = method.dept_head
    text = out.raw_text_features[labels] * head.text.scale + head.text.bias
    image = out.raw_image_features * head.image.scale + head.image.bias
    feats = torch.cat([text, image])
    cat_logits = feats @ head.linear.weight.t() + head.linear.bias
    cat_ce = F.cross_entropy(cat_logits, torch.cat([labels, labels]))
    img = F.normalize(out.raw_image_features, dim=-1)
    txt = F.normalize(out.raw_text_features, dim=-1)
    clip_ce = F.cross_entropy(tiny_clip.logit_scale.exp() * img @ txt.t(), labels)
    assert logs["dept_head"] == pytest.approx(0.6 * float(cat_ce), rel=1e-5)
    assert logs["ce"] == pytest.approx(0.4 * float(clip_ce), rel=1e-5)
    assert float(total) == pytest.approx(0.4 * float(clip_ce) + 0.6 * float(cat_ce), rel=1e-5)


def test_the_head_learns_at_its_multiple_of_the_learning_rate(tiny_clip, images, labels):
    """LR_EXP 6.5: the head's gradients are 6.5x those of the same model at multiplier 1, the prompts' equal."""
    grads = {}
    for mult in (1.0, 6.5):
        method = _dept("dept_maple", tiny_clip, head_lr_mult=mult).train()
        method.compute_loss(method(images), labels)[0].backward()
        grads[mult] = {k: p.grad.clone() for k, p in method.named_parameters() if p.grad is not None}
    assert set(grads[1.0]) == set(grads[6.5])
    for k, g in grads[1.0].items():
        factor = 6.5 if k.startswith("dept_head.") else 1.0
        torch.testing.assert_close(grads[6.5][k], factor * g, rtol=1e-5, atol=1e-7)


def test_training_classes_fuse_the_heads_and_other_classes_use_clip_alone(tiny_clip, images):
    method = _dept("dept_maple", tiny_clip, dept_weight=0.7).eval()
    base = _base_method(method, tiny_clip, CLASSNAMES)
    with torch.no_grad():
        clip_logits = base.predict(images, base.class_features())
        raw = tiny_clip.forward_image(images, base.vision.layer_prompts(base.text.layer_prompts())).features
        head = method.dept_head
        cat = (raw * head.image.scale + head.image.bias) @ head.linear.weight.t() + head.linear.bias
    fused = method.predict(images, method.class_features())
    torch.testing.assert_close(fused, 0.3 * clip_logits + 0.7 * cat, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(method.predict(images), fused, rtol=1e-5, atol=1e-5)  # the per-batch text path

    # A novel split as large as the base split is not the base split: the CLIP head alone, bit for bit.
    method.set_classes(NOVEL)
    base.set_classes(NOVEL)
    assert base_rows(method) is None
    with torch.no_grad():
        expected = base.predict(images, base.class_features())
    assert torch.equal(method.predict(images, method.class_features()), expected)
    assert torch.equal(method.predict(images), base.predict(images))

    # A subset of the training classes, in another order, fuses with the rows of its own classes.
    subset = [CLASSNAMES[3], CLASSNAMES[0]]
    method.set_classes(subset)
    base.set_classes(subset)
    with torch.no_grad():
        expected = 0.3 * base.predict(images, base.class_features()) + 0.7 * cat[:, [3, 0]]
    torch.testing.assert_close(method.predict(images, method.class_features()), expected, rtol=1e-5, atol=1e-5)

    # Without fusion, the training classes take the CAT head alone (TEST_TIME_FUSION False).
    method.set_classes(CLASSNAMES)
    method.dept_fusion = False
    torch.testing.assert_close(method.predict(images, method.class_features()), cat, rtol=1e-5, atol=1e-5)


def test_dept_plugs_into_each_base_method(tiny_clip):
    coop = build_method("dept_coop", tiny_clip, CLASSNAMES)
    src = build_method(make_config("dept_promptsrc", {"teacher_templates": "a photo of a {}."}), tiny_clip, CLASSNAMES)
    assert isinstance(coop, DePTModel) and isinstance(src, DePTPromptSRCModel)
    assert src.epoch_hooks and src.aggregation.method is src  # PromptSRC's prompt aggregation is kept
    assert coop.ce_weight == pytest.approx(0.3) and coop.dept_head.linear.out_features == len(CLASSNAMES)
    with pytest.raises(ConfigError, match="number of training classes"):
        make_config("dept_coop").build(tiny_clip, n_classes=0)


def test_training_classes_survive_a_checkpoint_saved_on_other_classes(tiny_clip, images, labels, tmp_path):
    method = _dept("dept_maple", tiny_clip).train()
    train_steps(method, images, labels, steps=1, lr=1e-2)
    method.eval()
    fused = method.predict(images, method.class_features())
    method.set_classes(NOVEL)  # evaluated on novel classes, then saved
    path = save_method(method, tmp_path / "model.safetensors")
    assert read_method(path).classnames == CLASSNAMES

    again = load_method(path, tiny_clip, NOVEL)
    assert again.base_classes == tuple(CLASSNAMES) and base_rows(again) is None
    assert torch.equal(again.predict(images, again.class_features()), method.predict(images, method.class_features()))
    again.set_classes(CLASSNAMES)
    torch.testing.assert_close(again.predict(images, again.class_features()), fused)


def test_a_dept_maple_run_records_fused_base_and_clip_only_novel_and_restore_eval_agrees(tmp_path):
    """A short engine run (6 classes: 3 base, 3 novel — the same size); the recorded novel accuracy is the CLIP
    head's, and `restore eval` in a fresh process gives the recorded numbers."""
    from restore.data import base_to_novel, few_shot, load_dataset
    from restore.engine.run_config import load_run_config
    from restore.engine.runs import run
    from tests.engine.fakes import TINY, make_tree

    root = make_tree(tmp_path / "data")
    values = {**TINY, "method": "dept_maple", "protocol": "b2n", "data.dataset": "dtd", "data.root": root,
              "out": tmp_path / "runs", "optim.epochs": 1, "data.batch_size": 4, "data.shots": 4,
              "shift_images": 0}  # fmt: skip
    result = run(load_run_config(None, values))
    metrics = json.loads((result.run_dir / "metrics.json").read_text())["metrics"]
    assert metrics["base"]["n"] == metrics["novel"]["n"] == 12

    base, novel = base_to_novel(few_shot(load_dataset("dtd", root), 4, 1))
    assert len(base.classnames) == len(novel.classnames) == 3
    model = result.run_dir / "model.safetensors"
    assert read_method(model).classnames == base.classnames
    from restore.clip import build_model, get_config

    torch.manual_seed(0)
    clip = build_model(get_config("tiny")).eval()
    method = load_method(model, clip, novel.classnames)
    assert base_rows(method) is None
    images = torch.randn(3, 3, 32, 32)
    plain = _base_method(method, clip, novel.classnames)
    assert torch.equal(method.predict(images, method.class_features()), plain.predict(images, plain.class_features()))

    out = tmp_path / "eval.json"
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "restore", "eval", "-k", str(result.run_dir), "-p", "b2n", "--quiet"]
    cmd += ["--json", str(out)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    again = json.loads(out.read_text())
    assert again["base"] == metrics["base"] and again["novel"] == metrics["novel"]


def test_restore_methods_prints_the_dept_and_mmrl_fields():
    from typer.testing import CliRunner

    from restore.cli import app

    runner = CliRunner()
    env = {"COLUMNS": "200", "NO_COLOR": "1"}
    dept = runner.invoke(app, ["methods", "dept_maple"], env=env)
    assert dept.exit_code == 0, dept.output
    assert "method.dept_weight" in dept.output and "LINEAR_PROBE.WEIGHT 0.7" in dept.output
    assert "method.depth" in dept.output and "Koorye/DePT" in dept.output  # MaPLe's fields; the schedule's source
    mmrl = runner.invoke(app, ["methods", "mmrl"], env=env)
    assert mmrl.exit_code == 0, mmrl.output
    assert "method.rep_start" in mmrl.output and "REP_LAYERS 6..12" in mmrl.output
