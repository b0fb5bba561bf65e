"""`restore analyze RUN --words K`: the nearest vocabulary words of each learned text context vector (CoOp's
interpret_prompt), checked against a brute-force distance computation over the vocabulary done here."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

import restore
from restore.cli import app
from tests.engine.fakes import make_tree

RUNNER = CliRunner()
ENV = {"COLUMNS": "250", "OMP_NUM_THREADS": "1"}
TINY = {"backbone": "random:tiny", "workers": 0, "quiet": True, "db": "none", "epochs": 1, "shots": 2}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = make_tree(tmp_path_factory.mktemp("data"))
    out = tmp_path_factory.mktemp("runs")
    coop = restore.run("b2n", method="coop", dataset="dtd", root=root, out=out, options={"n_ctx": 3}, **TINY)
    maple = restore.run("b2n", method="maple", dataset="dtd", root=root, out=out, options={"depth": 2}, **TINY)
    return {"coop": coop.run_dir, "maple": maple.run_dir, "root": root, "out": out}


def _brute_force(run_dir, k):
    """Every vocabulary row's distance to each context vector, one vector and one token at a time."""
    from restore.clip.tokenizer import bpe_tokenizer, eot_id, sot_id
    from restore.engine.backbone import load_backbone
    from restore.methods.model_file import load_method

    method = load_method(run_dir / "model.safetensors", load_backbone("random:tiny", torch.device("cpu")))
    table = method.clip.token_embedding.weight.detach().double()
    tok = bpe_tokenizer()
    expected = []
    for vector in method.text.ctx.detach().double():
        dists = [(float(((table[i] - vector) ** 2).sum().sqrt()), i) for i in range(table.shape[0])
                 if i not in (sot_id(), eot_id())]  # fmt: skip
        best = sorted(dists)[:k]
        words = [bytearray(tok.byte_decoder[c] for c in tok.decoder[i]).decode().replace("</w>", "") for _, i in best]
        expected.append((words, [d for d, _ in best]))
    return expected


@pytest.mark.parametrize("method", ["coop", "maple"])
def test_words_are_the_nearest_tokens_by_euclidean_distance(runs, method, tmp_path):
    result = RUNNER.invoke(app, ["analyze", str(runs[method]), "--words", "4", "--out", str(tmp_path)], env=ENV)
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "words.json").read_text())
    contexts = saved[0]["contexts"]
    expected = _brute_force(runs[method], 4)
    assert saved[0]["method"] == method and len(contexts) == len(expected) == (3 if method == "coop" else 2)
    for i, (got, (words, dists)) in enumerate(zip(contexts, expected, strict=True)):
        assert got["position"] == f"ctx {i + 1}"
        assert [w["word"] for w in got["words"]] == words
        assert [w["distance"] for w in got["words"]] == pytest.approx(dists, rel=1e-5)
        assert f"'{words[0]}' {dists[0]:.3f}" in result.output


def test_maple_initialised_from_a_photo_of_a_still_reads_as_those_words(runs, tmp_path):
    """Trained one epoch at the warm-up lr, MaPLe's context has not moved from "a photo": its own words are
    the nearest (distance ~0)."""
    RUNNER.invoke(app, ["analyze", str(runs["maple"]), "--words", "1", "--out", str(tmp_path)], env=ENV)
    contexts = json.loads((tmp_path / "words.json").read_text())[0]["contexts"]
    assert [c["words"][0]["word"] for c in contexts] == ["a", "photo"]
    assert all(c["words"][0]["distance"] < 1e-3 for c in contexts)


def test_words_of_a_method_without_text_context_is_a_clear_error(runs, tmp_path):
    zs = restore.run("b2n", method="zeroshot", dataset="dtd", root=runs["root"], out=runs["out"], **TINY).run_dir
    result = RUNNER.invoke(app, ["analyze", str(zs), "--words", "3", "--out", str(tmp_path)], env=ENV)
    assert result.exit_code == 2
    assert "error: method 'zeroshot' learns no text context vectors" in result.output and "hint:" in result.output
    bad = RUNNER.invoke(app, ["analyze", str(runs["coop"]), "--words", "0", "--out", str(tmp_path)], env=ENV)
    assert bad.exit_code == 2 and "error: --words 0 is not from 1 to 1000" in bad.output


def test_class_specific_contexts_are_read_per_class_and_cocoop_by_its_shared_context(tiny_clip):
    from restore.analysis.words import nearest_words
    from restore.methods import build_method, make_config

    csc = build_method(make_config("coop", {"n_ctx": 2, "class_specific": True}), tiny_clip, ["cat", "dog"])
    found = nearest_words(csc, 1)
    assert [c.position for c in found] == ["class cat ctx 1", "class cat ctx 2", "class dog ctx 1", "class dog ctx 2"]
    cocoop = build_method(make_config("cocoop", {"n_ctx": 4}), tiny_clip, ["cat", "dog"])
    words = [c.words[0] for c in nearest_words(cocoop, 1)]
    assert [w for w, _ in words] == ["a", "photo", "of", "a"]  # initialised from "a photo of a": distance 0
    assert all(d < 1e-4 for _, d in words)
