"""Untrusted files: no loader runs pickled code, TorchScript is read only where OpenAI's archives are read,
and archives cannot write outside their target folder.

Covered elsewhere (and listed in docs/guarantees.md): clip.load refusing a pickled payload in a zip checkpoint
(tests/clip/test_load_errors.py::test_pickled_code_is_never_run), archives with `..`, absolute, link and device
members (tests/test_download.py::test_hostile_*). Here: every other loader, both pickle formats, the command
line, and the archive cases those tests leave out.
"""

from __future__ import annotations

import pickle
import shutil
import stat
import zipfile
from pathlib import Path

import pytest
import torch

from restore.errors import CheckpointError, DownloadError
from tests.reliability.helpers import TINY, cli, errors

# torch's own notes about the files these tests build on purpose.
pytestmark = [
    pytest.mark.filterwarnings("ignore:Detected pickle protocol"),
    pytest.mark.filterwarnings("ignore:'torch.load' received a zip file that looks like a TorchScript"),
    pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated"),
]


class RunsCode:
    """A pickle that creates `marker` when an unrestricted unpickler reads it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _trap(tmp_path: Path, kind: str) -> tuple[Path, Path]:
    """(file, marker): a checkpoint-looking file with a payload that would create `marker` if unpickled."""
    marker = tmp_path / f"pwned-{kind}"
    payload = {
        "format": "restore-train/1",
        "state_dict": {"visual.proj": torch.zeros(2, 2)},
        "learnable": {"ctx": torch.zeros(2, 4)},
        "payload": RunsCode(marker),
    }
    path = tmp_path / f"trap-{kind}.pt"
    if kind == "zip":
        torch.save(payload, path)
    elif kind == "legacy":
        torch.save(payload, path, _use_new_zipfile_serialization=False)
    else:  # a bare pickle, as `pickle.dump` writes it
        path.write_bytes(pickle.dumps(payload, protocol=4))
    return path, marker


def _load_clip(path: Path):
    from restore.clip import load

    return load(path)


def _load_clip_folder(path: Path):
    from restore.clip import load

    folder = path.parent / f"openclip-{path.stem}"
    folder.mkdir()
    (folder / "open_clip_pytorch_model.bin").write_bytes(path.read_bytes())
    return load(folder)


def _read_method(path: Path):
    from restore.methods.model_file import read_method

    return read_method(path)


def _training_checkpoint(path: Path):
    from restore.engine.train_checkpoint import load_training_checkpoint

    return load_training_checkpoint(path)


LOADERS = {"clip.load": _load_clip, "clip.load(folder)": _load_clip_folder, "read_method": _read_method,
           "training checkpoint": _training_checkpoint}  # fmt: skip


@pytest.mark.parametrize("kind", ["zip", "legacy", "pickle"])
@pytest.mark.parametrize("loader", list(LOADERS))
def test_no_loader_runs_pickled_code(tmp_path, loader, kind):
    path, marker = _trap(tmp_path, kind)
    with pytest.raises(CheckpointError) as info:
        LOADERS[loader](path)
    assert str(path.stem) in info.value.message
    assert not marker.exists(), f"{loader} ran the pickled payload"
    if loader in ("clip.load", "clip.load(folder)", "training checkpoint"):
        assert "pickled Python objects" in info.value.message and "could run code" in info.value.message


@pytest.fixture(scope="module")
def finished_run(shared_root, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run") / "coop"
    result = cli("train", "-m", "coop", "-d", "dtd", "-r", shared_root, "--run-dir", run_dir, "--db", "none",
                 "--epochs", 1, "--batch-size", 4, "--shots", 2, *TINY)  # fmt: skip
    assert result.exit_code == 0, result.output
    return run_dir


def test_the_command_line_refuses_pickled_code_everywhere(finished_run, shared_root, tmp_path):
    path, marker = _trap(tmp_path, "zip")
    out = tmp_path / "runs"
    as_backbone = cli("train", "-m", "coop", "-d", "dtd", "-r", shared_root, "-b", path, "-o", out, "--epochs", 1,
                      "--workers", 0, "--quiet")  # fmt: skip
    as_model = cli("eval", "-k", path, "-b", "random:tiny", "-d", "dtd", "-r", shared_root, "--device", "cpu")
    for result in (as_backbone, as_model):
        assert result.exit_code == 2 and "Traceback" not in result.output, result.output
        (line,) = errors(result.output)
        assert str(path) in line
    assert not out.exists()

    # A run directory whose training checkpoint was replaced: --resume refuses it and runs nothing.
    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    (run_dir / "metrics.json").unlink()
    (run_dir / "run.json").write_text('{"status": "interrupted"}')
    shutil.copy(path, run_dir / "checkpoints" / "last.pt")
    resumed = cli("train", "-m", "coop", "-d", "dtd", "-r", shared_root, "--run-dir", run_dir, "--db", "none",
                  "--epochs", 1, "--batch-size", 4, "--shots", 2, *TINY, "--resume")  # fmt: skip
    assert resumed.exit_code == 2, resumed.output
    (line,) = errors(resumed.output)
    assert "last.pt" in line and "pickled Python objects" in line
    assert not marker.exists()


# --- TorchScript ---------------------------------------------------------------------------------------------
@pytest.fixture
def torchscript(tmp_path):
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(path))
    return path


@pytest.fixture
def jit_calls(monkeypatch):
    calls: list[str] = []
    real = torch.jit.load

    def spy(f, *args, **kwargs):
        calls.append(str(f))
        return real(f, *args, **kwargs)

    monkeypatch.setattr(torch.jit, "load", spy)
    return calls


def test_torchscript_is_refused_by_every_loader_but_the_openai_path(torchscript, jit_calls, tmp_path):
    for loader in ("read_method", "training checkpoint"):
        with pytest.raises(CheckpointError, match=r"scripted\.pt"):
            LOADERS[loader](torchscript)
    assert jit_calls == []
    # clip.load reads it as an OpenAI archive (the one place torch.jit.load is called), then finds no CLIP in it.
    disguised = tmp_path / "weights.safetensors"
    disguised.write_bytes(torchscript.read_bytes())
    for path in (torchscript, disguised):
        with pytest.raises(CheckpointError, match="is not a CLIP ViT checkpoint"):
            _load_clip(path)
    assert jit_calls == [str(torchscript), str(disguised)]


def test_torchscript_training_checkpoint_says_what_it_is(torchscript):
    with pytest.raises(CheckpointError, match="is a TorchScript archive, not a restore training checkpoint"):
        _training_checkpoint(torchscript)


# --- archives: what tests/test_download.py leaves out --------------------------------------------------------
def _zip(path: Path, *members: tuple[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members:
            zf.writestr(zipfile.ZipInfo(name), data)
    return path


@pytest.mark.parametrize(
    ("name", "why"),
    [("..\\evil.txt", "'..'"), ("ok\\..\\..\\evil.txt", "'..'"), ("\\\\server\\share\\evil.txt", "absolute"),
     ("C:evil.txt", "absolute")],
)  # fmt: skip
def test_windows_style_member_names_are_refused(tmp_path, name, why):
    from restore.transfer import safe_extract

    archive = _zip(tmp_path / "a.zip", ("fine.txt", b"ok"), (name, b"evil"))
    with pytest.raises(DownloadError) as info:
        safe_extract(archive, tmp_path / "out")
    assert repr(name) in info.value.message and why in info.value.message
    assert not (tmp_path / "out").exists() and not list(tmp_path.rglob("evil.txt"))


def test_a_link_already_in_the_target_folder_is_not_followed(tmp_path):
    from restore.transfer import safe_extract

    outside = tmp_path / "outside"
    outside.mkdir()
    target = tmp_path / "out"
    target.mkdir()
    (target / "sub").symlink_to(outside, target_is_directory=True)
    archive = _zip(tmp_path / "a.zip", ("sub/evil.txt", b"evil"))
    with pytest.raises(DownloadError, match="resolves outside"):
        safe_extract(archive, target)
    assert not (outside / "evil.txt").exists()


def test_a_zip_member_marked_as_a_fifo_is_refused(tmp_path):
    from restore.transfer import safe_extract

    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        info = zipfile.ZipInfo("pipe")
        info.external_attr = (stat.S_IFIFO | 0o644) << 16
        zf.writestr(info, b"")
    with pytest.raises(DownloadError, match="special file type"):
        safe_extract(archive, tmp_path / "out")


# --- a results database from elsewhere -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("metrics", "[" * 100_000 + "]" * 100_000, "column 'metrics' does not hold valid JSON"),
        ("config", "[" * 100_000 + "]" * 100_000, "column 'config' does not hold valid JSON"),
        ("metrics", "[]", "column 'metrics' holds a JSON list, not an object"),
        ("timings", '"fast"', "column 'timings' holds a JSON str, not an object"),
        ("seed", "abc", "column 'seed' holds 'abc', not an integer"),
        ("shots", 2.5, "column 'shots' holds 2.5, not an integer"),
        ("method", b"\x07", "column 'method' holds b'\\x07', not text"),  # a BLOB
    ],
)
def test_a_database_edited_into_nonsense_is_a_clear_error(tmp_path, capsys, column, value, message):
    import sqlite3

    from restore.cli import main
    from restore.results import RunRecord, open_results

    db = tmp_path / "results.sqlite"
    metrics = {"base": {"top1": 50.0, "top5": 90.0, "n": 10}, "novel": {"top1": 40.0, "top5": 80.0, "n": 10}}
    with open_results(db) as store:
        for seed in (1, 2):
            run = f"run{seed}"
            store.start_run(RunRecord.new(method="coop", dataset="dtd", protocol="b2n", seed=seed, backbone="tiny",
                                          config={"seed": seed}, shots=4, run_id=run))  # fmt: skip
            store.finish_run(run, metrics, {})
    with sqlite3.connect(db) as conn:
        conn.execute(f"UPDATE runs SET {column} = ? WHERE run_id = 'run2'", (value,))
    assert main(["report", "--db", str(db), "--no-published"]) == 2
    err = capsys.readouterr().err
    assert f"error: run 'run2': {message}" in err and "hint: the row was edited by hand" in err
    assert "Traceback" not in err
