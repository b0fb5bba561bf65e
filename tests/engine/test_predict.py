"""Using a trained run: `restore predict` and `restore.load_run(...).predict` on the user's own images, over
every class of the run (base and novel after base-to-novel) or any names given; clear errors otherwise."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import restore
from restore.cli import app

RUNNER = CliRunner()
ENV = {"COLUMNS": "200", "OMP_NUM_THREADS": "1"}
TINY = {"backbone": "random:tiny", "workers": 0, "quiet": True, "overrides": ["data.eval_batch_size=16"]}
DOCS = Path(__file__).resolve().parents[2] / "README.md"  # the README's Python example, as written


def invoke(*args):
    return RUNNER.invoke(app, [str(a) for a in args], env=ENV)


@pytest.fixture(scope="module")
def b2n_run(data_root, tmp_path_factory):
    """A finished base-to-novel CoOp run on the generated DTD (6 classes: 3 base, 3 novel)."""
    out = tmp_path_factory.mktemp("runs")
    return restore.run("b2n", method="coop", dataset="dtd", root=data_root, shots=2, seed=1, epochs=1,
                       batch_size=4, out=out, db="none", options={"n_ctx": 2}, **TINY).run_dir  # fmt: skip


@pytest.fixture
def photos(tmp_path):
    """Two images of another size than the model's (the preprocessing must resize them), in a folder."""
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.jpg"):
        Image.fromarray(rng.integers(0, 255, (50, 70, 3), dtype=np.uint8)).save(folder / name)
    return folder


def _split_classnames(data_root: Path) -> list[str]:
    split = json.loads((data_root / "dtd" / "split_zhou_DescribableTextures.json").read_text())
    return [name for _, _, name in sorted({(lab, name, name) for _, lab, name in split["test"]})]


def _expected_probs(run_dir: Path, files: list[Path], classnames: list[str]) -> torch.Tensor:
    """The probabilities computed here from the parts: the checkpoint on the backbone, CLIP's eval
    transform at the run's image size (32 px), softmax of the logits."""
    from restore.data import eval_transform
    from restore.engine.backbone import load_backbone
    from restore.methods.model_file import load_method

    method = load_method(run_dir / "model.safetensors", load_backbone("random:tiny", torch.device("cpu")))
    method.set_classes(classnames)
    transform = eval_transform(32)
    images = torch.stack([transform(Image.open(f)) for f in files])
    with torch.no_grad():
        return method.forward(images, shift=None).logits.softmax(-1)


def test_predict_defaults_to_every_class_of_a_b2n_run_base_and_novel(b2n_run, data_root, photos, tmp_path):
    every = _split_classnames(data_root)
    assert len(every) == 6
    assert json.loads((b2n_run / "metrics.json").read_text())["classnames"] == every
    out = tmp_path / "pred.json"
    result = invoke("predict", b2n_run, photos, "--top", 6, "--json", out)
    assert result.exit_code == 0, result.output
    assert "2 image(s), 6 classes (the run's), top 6" in result.output
    saved = json.loads(out.read_text())
    assert saved["classes"] == every
    files = sorted(photos.iterdir())
    expected = _expected_probs(b2n_run, files, every)
    for i, (entry, f) in enumerate(zip(saved["predictions"], files, strict=True)):
        assert entry["image"] == str(f)
        got = {row["class"]: row["probability"] for row in entry["top"]}
        assert got == pytest.approx({c: float(expected[i, j]) for j, c in enumerate(every)}, abs=1e-5)
        best = every[int(expected[i].argmax())]
        assert entry["top"][0]["class"] == best
        assert re.search(rf"│ 1 │ {re.escape(best)} +│ +{100 * float(expected[i].max()):.2f}% │", result.output)


def test_predict_with_given_class_names_and_a_class_file(b2n_run, photos, tmp_path):
    names = ["red brick", "blue sky", "green grass"]
    files = sorted(photos.iterdir())
    expected = _expected_probs(b2n_run, files, names)
    result = invoke("predict", b2n_run, *files, "--classes", ",".join(names), "--top", 2, "--json", tmp_path / "p.json")
    assert result.exit_code == 0, result.output
    top = json.loads((tmp_path / "p.json").read_text())["predictions"][0]["top"]
    assert len(top) == 2 and top[0]["probability"] == pytest.approx(float(expected[0].max()), abs=1e-5)
    listed = tmp_path / "classes.txt"
    listed.write_text("# my classes\nred brick\n\nblue sky\ngreen grass\n")
    result = invoke("predict", b2n_run, files[0], "--classes-file", listed, "--json", tmp_path / "q.json")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "q.json").read_text())["classes"] == names


def test_load_run_returns_the_preprocessing_and_keeps_its_classes(b2n_run, data_root, photos):
    loaded = restore.load_run(b2n_run)
    assert loaded.classnames == _split_classnames(data_root) and loaded.model is loaded.method
    image = Image.open(sorted(photos.iterdir())[0])
    assert tuple(loaded.preprocess(image).shape) == (3, 32, 32)
    other = loaded.predict([image], classes=["x ray", "y axis"])
    assert other.classnames == ["x ray", "y axis"] and other.sources == ["image 0"]
    assert float(other.probs.sum()) == pytest.approx(1.0)
    assert loaded.model.predict(loaded.preprocess(image)[None]).shape == (1, 6)  # back on the run's classes


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("corrupt", "error: cannot read image"),
        ("missing", "error: no such image file or folder"),
        ("empty_folder", "error: folder"),
        ("no_model", "holds no trained model (model.safetensors): the run has not finished"),
        ("not_a_run", "is not a run directory (no config.yaml)"),
        ("one_class", "error: --classes: 1 class name(s); classifying needs at least 2"),
        ("both", "error: give --classes or --classes-file, not both"),
        ("json_folder", "is a folder"),
    ],
)
def test_predict_errors_are_one_message_with_a_hint(b2n_run, photos, tmp_path, case, message):
    run, images, extra = b2n_run, [sorted(photos.iterdir())[0]], []
    if case == "corrupt":
        bad = tmp_path / "bad.png"
        bad.write_bytes(b"not an image")
        images = [bad]
    elif case == "missing":
        images = [tmp_path / "nope.png"]
    elif case == "empty_folder":
        (tmp_path / "empty").mkdir()
        images = [tmp_path / "empty"]
    elif case == "no_model":
        run = tmp_path / "unfinished"
        run.mkdir()
        shutil.copy(b2n_run / "config.yaml", run / "config.yaml")
    elif case == "not_a_run":
        run = tmp_path
    elif case == "one_class":
        extra = ["--classes", "cat"]
    elif case == "both":
        extra = ["--classes", "a,b", "--classes-file", tmp_path / "f.txt"]
    elif case == "json_folder":
        extra = ["--json", tmp_path]
    result = invoke("predict", run, *images, *extra)
    assert result.exit_code == 2, result.output
    assert message in result.output and "hint:" in result.output
    assert "Traceback" not in result.output and "probability" not in result.output  # refused before any work


def _python_block(path: Path) -> str:
    """The ```python block of the doc's `## Python` section."""
    text = path.read_text()
    section = text[text.index("## Python") :]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


@pytest.mark.integration
def test_the_documented_python_example_runs_as_written_on_the_world(tmp_path, monkeypatch):
    """The world backbone takes 48-pixel images: the example feeds a 64-pixel file and PIL images through the
    run's preprocessing, and classifies over all 12 classes of world_shapes (6 base, 6 novel)."""
    monkeypatch.chdir(tmp_path)
    Image.fromarray(np.full((64, 64, 3), 200, dtype=np.uint8)).save("shape.png")
    code = _python_block(DOCS)
    scope: dict = {}
    exec(compile(code, str(DOCS), "exec"), scope)  # the documented example, as a user runs it
    loaded, predictions = scope["loaded"], scope["predictions"]
    assert len(loaded.classnames) == 12 and predictions.probs.shape == (1, 12)
    assert scope["logits"].shape == (1, 12)
    from restore.methods.model_file import read_method

    trained = read_method(loaded.run_dir / "model.safetensors").classnames
    assert trained == loaded.classnames[:6]  # trained on the base half; predicts over base and novel
    assert float(predictions.probs.sum()) == pytest.approx(1.0)


def test_a_run_recorded_before_its_classes_were_reads_them_from_its_dataset(b2n_run, data_root, tmp_path):
    """metrics.json without ``classnames`` (runs of an earlier version): the classes come from the dataset;
    with the dataset gone too, the trained classes, and a warning that says so."""
    old = tmp_path / "old-run"
    shutil.copytree(b2n_run, old)
    saved = json.loads((old / "metrics.json").read_text())
    del saved["classnames"]
    (old / "metrics.json").write_text(json.dumps(saved))
    assert restore.load_run(old).classnames == _split_classnames(data_root)
    config = (old / "config.yaml").read_text().replace(str(data_root), str(tmp_path / "gone"))
    (old / "config.yaml").write_text(config)
    with pytest.warns(restore.errors.RestoreWarning, match="its classes are not recorded and its dataset cannot"):
        loaded = restore.load_run(old)
    assert loaded.classnames == _split_classnames(data_root)[:3]
