"""MMRL: the representation tokens enter both towers at the right blocks (an independent block-by-block
computation with the release's placement: after the class / start token), its loss, its test rule (training
classes fused, any other class set the class-token logits), a checkpoint round trip and a short engine run."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
import yaml

from restore.clip.model import ShiftRequest
from restore.clip.text_classifier import class_text_features
from restore.clip.tokenizer import tokenize
from restore.methods import build_method, make_config
from restore.methods.model_file import load_method, save_method
from tests.methods.conftest import CLASSNAMES, train_steps

NOVEL = ["zebra", "violin", "snow_leopard", "canoe", "tulip"]  # as many classes as CLASSNAMES, none shared
SETTINGS = {"rep_start": 2, "rep_dim": 24, "n_rep_tokens": 3, "alpha": 0.6, "reg_weight": 2.0}


def _mmrl(clip, classes=CLASSNAMES, **values):
    torch.manual_seed(2)
    method = build_method(make_config("mmrl", {**SETTINGS, **values}), clip, classes)
    with torch.no_grad():  # maps away from their shared initialisation, so each layer's own map must be used
        for m in (*method.rep.to_text, *method.rep.to_vision):
            m.weight.normal_(0, 0.2)
            m.bias.normal_(0, 0.1)
    return method


def _reference_image(clip, images, vision_tokens, start):
    """The release's image tower: tokens inserted right after CLS at block ``start`` (0-based), replaced at
    every later block; CLS through ``proj``, the mean of the tokens through ``proj_rep`` (given separately)."""
    v = clip.visual
    n = vision_tokens[0].shape[0]
    x = v.embed(images)
    for layer, block in enumerate(v.transformer.resblocks):
        if layer >= start:
            rep = vision_tokens[layer - start].expand(x.shape[0], -1, -1)
            rest = x[:, 1:] if layer == start else x[:, 1 + n :]
            x = torch.cat([x[:, :1], rep, rest], dim=1)
        x = block(x)[0]
    return v.ln_post(x[:, 0]) @ v.proj, v.ln_post(x[:, 1 : 1 + n]).mean(1)


def _reference_text(clip, tokens, text_tokens, start):
    """The release's text tower: the whole 77-token context, tokens inserted after the start token at block
    ``start`` (no positional embedding), replaced at every later block, the feature at end-of-text + n."""
    n = text_tokens[0].shape[0]
    x = clip.token_embedding(tokens) + clip.positional_embedding
    for layer, block in enumerate(clip.transformer.resblocks):
        if layer >= start:
            rep = text_tokens[layer - start].expand(x.shape[0], -1, -1)
            rest = x[:, 1:] if layer == start else x[:, 1 + n :]
            x = torch.cat([x[:, :1], rep, rest], dim=1)
        x = block(x, causal=True)[0]
    x = clip.ln_final(x)
    return x[torch.arange(x.shape[0]), tokens.argmax(-1) + n] @ clip.text_projection


def test_representation_tokens_enter_both_towers_from_their_start_block(tiny_clip, images):
    method = _mmrl(tiny_clip).eval()
    assert method.rep_start == 1 and len(method.rep.to_text) == len(method.rep.to_vision) == 2  # blocks 2, 3
    text_tokens = [m(method.rep.tokens) for m in method.rep.to_text]
    vision_tokens = [m(method.rep.tokens) for m in method.rep.to_vision]
    with torch.no_grad():
        cls, rep_mean = _reference_image(tiny_clip, images, vision_tokens, start=1)
        sentences = [f"a photo of a {c.replace('_', ' ')}." for c in CLASSNAMES]
        text = _reference_text(tiny_clip, tokenize(sentences, tiny_clip.context_length), text_tokens, start=1)
        out = method(images)
    torch.testing.assert_close(out.raw_image_features, cls, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.raw_text_features, text, rtol=1e-4, atol=1e-5)
    rep = rep_mean @ method.rep.proj_rep
    scale = tiny_clip.logit_scale.exp()
    logits = scale * F.normalize(cls, dim=-1) @ F.normalize(text, dim=-1).t()
    logits_rep = scale * F.normalize(rep, dim=-1) @ F.normalize(text, dim=-1).t()
    torch.testing.assert_close(out.measured["logits_rep"], logits_rep, rtol=1e-4, atol=1e-4)
    # The training classes: α·class-token + (1 - α)·representation logits.
    torch.testing.assert_close(out.logits, 0.6 * logits + 0.4 * logits_rep, rtol=1e-4, atol=1e-4)


def test_the_in_block_shift_is_measured_at_the_representation_blocks_only(tiny_clip, images):
    """What RESTORE's activation measure reads: Ω at each block with tokens, here checked against running the
    first such image block with and without them."""
    method = _mmrl(tiny_clip).eval()
    with torch.no_grad():
        out = method(images, shift=ShiftRequest())
        v = tiny_clip.visual
        x = v.transformer.resblocks[0](v.embed(images))[0]
        tokens = method.rep.to_vision[0](method.rep.tokens).expand(x.shape[0], -1, -1)
        with_tokens = v.transformer.resblocks[1](torch.cat([x, tokens], dim=1))[0][:, : x.shape[1]]
        without = v.transformer.resblocks[1](x)[0]
    assert [s is not None for s in out.vision_shifts] == [False, True, True]
    assert [s is not None for s in out.text_shifts] == [False, True, True]
    expected = (with_tokens - without).pow(2).sum(-1).mean(1)
    torch.testing.assert_close(out.vision_shifts[1].shift_ms, expected, rtol=1e-4, atol=1e-6)


def test_the_loss_is_the_release_weighting_of_two_heads_and_the_alignment(tiny_clip, images, labels):
    method = _mmrl(tiny_clip).train()
    out = method(images)
    total, logs = method.compute_loss(out, labels)
    scale = tiny_clip.logit_scale.exp()
    img = F.normalize(out.raw_image_features, dim=-1)
    txt = F.normalize(out.raw_text_features, dim=-1)
    with torch.no_grad():
        ref_img = F.normalize(tiny_clip.encode_image(images), dim=-1)
        ref_txt = class_text_features(tiny_clip, CLASSNAMES, ("a photo of a {}.",))
    expected = {
        "ce": 0.6 * F.cross_entropy(scale * img @ txt.t(), labels),
        "ce_rep": 0.4 * F.cross_entropy(out.measured["logits_rep"], labels),
        "reg_image": 2.0 * (1 - F.cosine_similarity(img, ref_img, dim=-1).mean()),
        "reg_text": 2.0 * (1 - F.cosine_similarity(txt, ref_txt, dim=-1).mean()),
    }
    assert logs == pytest.approx({k: float(v) for k, v in expected.items()}, rel=1e-5)
    assert float(total) == pytest.approx(sum(float(v) for v in expected.values()), rel=1e-5)


def test_other_class_sets_take_the_class_token_logits_only(tiny_clip, images):
    method = _mmrl(tiny_clip).eval()
    for classes in (NOVEL, CLASSNAMES[:3], CLASSNAMES[::-1]):  # a same-size novel split, a subset, a reordering
        method.set_classes(classes)
        out = method(images)
        cls = F.normalize(out.raw_image_features, dim=-1)
        expected = tiny_clip.logit_scale.exp() * cls @ out.text_features.t()
        torch.testing.assert_close(out.logits, expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(method.predict(images, method.class_features()), out.logits, rtol=1e-5, atol=1e-5)
    method.set_classes(CLASSNAMES)
    out = method(images)
    class_only = tiny_clip.logit_scale.exp() * F.normalize(out.raw_image_features, dim=-1) @ out.text_features.t()
    assert not torch.allclose(out.logits, class_only, atol=1e-3)  # back on the training classes: fused again
    torch.testing.assert_close(method.predict(images, method.class_features()), out.logits, rtol=1e-5, atol=1e-5)


def test_a_checkpoint_keeps_the_training_classes_and_the_test_rule(tiny_clip, images, labels, tmp_path):
    method = _mmrl(tiny_clip).train()
    train_steps(method, images, labels, steps=2, lr=1e-2)
    method.eval()
    fused = method.predict(images, method.class_features())
    method.set_classes(NOVEL)
    novel = method.predict(images, method.class_features())
    path = save_method(method, tmp_path / "model.safetensors")
    again = load_method(path, tiny_clip)
    assert again.base_classes == tuple(CLASSNAMES) and again.classnames == CLASSNAMES
    torch.testing.assert_close(again.predict(images, again.class_features()), fused, rtol=0, atol=0)
    again.set_classes(NOVEL)
    torch.testing.assert_close(again.predict(images, again.class_features()), novel, rtol=0, atol=0)


def test_per_dataset_values_and_the_template(tiny_clip):
    cfg = make_config("mmrl").for_run("b2n", "EuroSAT")
    assert (cfg.reg_weight, cfg.rep_dim) == (0.01, 2048)
    assert make_config("mmrl").for_run("xd", "ImageNet").reg_weight == 0.2
    assert make_config("mmrl").for_run("fewshot", "my_folder").reg_weight == 0.5
    method = build_method(make_config("mmrl", {"rep_dim": 16}), tiny_clip, CLASSNAMES, "DescribableTextures")
    assert method.text.templates == ("{} texture.",)
    assert method.rep_start == 2  # the release's block 6 capped at the tiny model's last block


def test_an_mmrl_run_finishes_and_records_a_row(tmp_path):
    from restore.engine.run_config import load_run_config
    from restore.engine.runs import run
    from tests.engine.fakes import TINY, make_tree

    root = make_tree(tmp_path / "data")
    values = {**TINY, "method": "mmrl", "protocol": "b2n", "data.dataset": "dtd", "data.root": root,
              "out": tmp_path / "runs", "optim.epochs": 1, "data.batch_size": 4, "data.shots": 4,
              "shift_images": 0, "method.rep_dim": 32}  # fmt: skip
    result = run(load_run_config(None, values))
    saved = json.loads((result.run_dir / "metrics.json").read_text())
    assert saved["method"] == "mmrl" and set(saved["metrics"]) >= {"base", "novel", "hm"}
    config = yaml.safe_load((result.run_dir / "config.yaml").read_text())
    assert config["method"]["reg_weight"] == 6.0  # DTD's REG_WEIGHT, filled for the run
    from restore.results import open_results

    with open_results(tmp_path / "runs" / "results.sqlite") as store:
        (row,) = store.query()
    assert row.status == "finished" and row.method == "mmrl" and row.metrics["novel"] == saved["metrics"]["novel"]
