"""README "Adding a method": the example module, installed as written into the methods package, is found
without editing anything else, listed, trained through the engine and checkpointed."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import restore
import restore.methods as methods
from restore.cli import app
from restore.methods import base, build_method, import_modules, method_names
from restore.methods.model_file import load_method, save_method
from tests.engine.fakes import make_tree

TINY = {"backbone": "random:tiny", "workers": 0, "quiet": True, "overrides": ["data.eval_batch_size=16"]}

README = Path(__file__).resolve().parents[2] / "README.md"


def _example() -> str:
    section = README.read_text().split("## Adding a method", 1)[1].split("\n## ", 1)[0]
    (code,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    return code


@pytest.fixture
def shallow_vl(tmp_path, monkeypatch):
    """The README's module saved under the package (a second folder on its path): nothing else edited."""
    folder = tmp_path / "more_methods"
    folder.mkdir()
    (folder / "shallow_vl.py").write_text(_example())
    monkeypatch.setattr(methods, "__path__", [*methods.__path__, str(folder)])
    assert "shallow_vl" not in method_names()
    yield import_modules()
    base._REGISTRY.pop("shallow_vl", None)
    sys.modules.pop("restore.methods.shallow_vl", None)


def test_a_module_in_the_methods_folder_is_a_method_listed_trained_and_checkpointed(shallow_vl, tiny_clip, tmp_path):
    assert "shallow_vl" in shallow_vl and "maple" in shallow_vl  # the package's own modules, the same way
    assert "shallow_vl" in method_names()

    listed = CliRunner().invoke(app, ["methods"])
    assert listed.exit_code == 0, listed.output
    assert "shallow_vl" in listed.output and "n_ctx" in listed.output

    clip = tiny_clip
    method = build_method("shallow_vl", clip, ["cat", "dog", "red car"])
    learnable = {n for n, p in method.named_parameters() if p.requires_grad}
    assert learnable == {"text.ctx", "vision.prompts.0"}
    out = method(torch.randn(2, 3, 32, 32))
    method.compute_loss(out, torch.tensor([0, 2]))[0].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in method.learnable_parameters())
    assert all(p.grad is None for p in method.clip.parameters())

    path = save_method(method, tmp_path / "m.safetensors")
    again = load_method(path, clip)
    again.set_classes(["cat", "dog", "red car"])
    images = torch.randn(3, 3, 32, 32)
    assert torch.equal(again.predict(images), method.eval().predict(images))

    data = make_tree(tmp_path / "data")
    result = restore.run(
        "b2n", method="shallow_vl", dataset="dtd", root=data, shots=2, epochs=1, batch_size=4,
        out=tmp_path / "runs", db="none", **TINY,
    )  # fmt: skip
    assert result.status == "finished" and 0.0 <= result.metrics["hm"] <= 100.0
    assert result.config.method.n_ctx == 2
