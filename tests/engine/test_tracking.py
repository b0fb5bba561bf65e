"""Per-step scalars: the JSONL and TensorBoard files hold what the trainer computed (read back with TensorBoard's
own reader), a resume neither duplicates nor loses a step, W&B and MLflow get the same values through their
libraries (offline), and a tracker whose library is missing is refused before a run writes anything."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import time

import numpy as np
import pytest
import torch

from restore.engine.run_config import build_run_config, load_run_config
from restore.engine.schedule import lr_at_epoch
from restore.engine.tracking import (
    SCALARS_FILE,
    TENSORBOARD_DIR,
    JsonlTracker,
    TensorBoardTracker,
    Trackers,
    check_trackers,
    crc32c,
    final_metrics,
    open_trackers,
    read_scalars,
)
from restore.engine.trainer import Trainer, TrainSettings
from restore.errors import ConfigError
from restore.methods import build_method, make_config
from tests.engine.fakes import TINY, Blobs

SETTINGS = {"epochs": 3, "lr": 0.01, "batch_size": 8, "seed": 3}
STEPS = 3 * (48 // 8)


class Spy:
    """A tracker that keeps what the trainer handed it."""

    def __init__(self) -> None:
        self.logged: list[tuple[int, dict[str, float]]] = []
        self.begun: list[int] = []
        self.flushed: list[int] = []  # the last logged step at each flush

    def begin(self, step: int) -> None:
        self.begun.append(step)

    def log(self, step: int, scalars) -> None:
        self.logged.append((step, dict(scalars)))

    def flush(self) -> None:
        self.flushed.append(self.logged[-1][0] if self.logged else 0)

    def close(self) -> None:
        pass


def _method(tiny_clip, classnames, name="restore_m"):
    torch.manual_seed(11)
    return build_method(make_config(name, {}), tiny_clip, classnames, "DescribableTextures")


def _fit(method, run_dir, *trackers, interrupt_at=0, **fit):
    """Train with the JSONL and TensorBoard trackers (and ``trackers``) in ``run_dir``; Ctrl-C while global
    step ``interrupt_at`` computes."""
    tracker = Trackers([JsonlTracker(run_dir / SCALARS_FILE), TensorBoardTracker(run_dir / TENSORBOARD_DIR), *trackers])
    trainer = Trainer(
        method, Blobs(), TrainSettings(**SETTINGS), checkpoint=run_dir / "last.pt", config_hash="h", tracker=tracker
    )
    if interrupt_at:
        real, calls = method.compute_loss, [0]

        def compute_loss(out, labels):
            calls[0] += 1
            if calls[0] == interrupt_at:
                os.kill(os.getpid(), signal.SIGINT)
            return real(out, labels)

        method.compute_loss = compute_loss
    try:
        return trainer.fit(**fit)
    finally:
        tracker.close()


def _tensorboard(folder):
    """{tag: [(step, value)]} read by TensorBoard's own EventAccumulator (all events kept)."""
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    acc = accumulator.EventAccumulator(str(folder), size_guidance={accumulator.SCALARS: 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _without_time(records):
    return [{k: v for k, v in r.items() if k != "time"} for r in records]


def test_crc32c_matches_the_standard_check_value():
    assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value (RFC 3720, appendix B.4)
    assert crc32c(b"") == 0


def test_jsonl_and_tensorboard_hold_every_step_the_trainer_logged(tiny_clip, classnames, tmp_path):
    spy = Spy()
    _fit(_method(tiny_clip, classnames), tmp_path, spy)
    assert spy.begun == [0] and [s for s, _ in spy.logged] == list(range(1, STEPS + 1))
    assert spy.flushed == [6, 12, 18]  # before each epoch's checkpoint
    first = spy.logged[0][1]
    assert {"epoch", "loss", "ce", "fs", "shift_v", "shift_t", "alpha_v", "alpha_t", "lr", "acc"} <= set(first)
    for step, scalars in spy.logged:  # the values are the trainer's: its schedule, its loss = ce + fs
        epoch = (step - 1) // 6
        assert scalars["epoch"] == epoch + 1 and scalars["lr"] == lr_at_epoch(epoch, lr=0.01, epochs=3)
        assert scalars["loss"] == pytest.approx(scalars["ce"] + scalars["fs"], rel=1e-6)
        assert 0.0 <= scalars["acc"] <= 100.0

    records = read_scalars(tmp_path)
    assert [r.pop("step") for r in records] == list(range(1, STEPS + 1))
    assert _without_time(records) == [s for _, s in spy.logged]  # exact: JSON keeps every float

    board = _tensorboard(tmp_path / TENSORBOARD_DIR)
    assert set(board) == {f"train/{k}" for k in first}
    for name in first:
        steps, values = zip(*board[f"train/{name}"], strict=True)
        assert list(steps) == list(range(1, STEPS + 1))
        expected = np.array([s[name] for _, s in spy.logged], dtype=np.float32)  # event files hold float32
        np.testing.assert_array_equal(np.array(values, dtype=np.float32), expected)


def test_a_resume_continues_the_files_from_its_checkpoint_without_duplicates(tiny_clip, classnames, tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    _fit(_method(tiny_clip, classnames), whole)

    # A process that checkpoints epoch 1, logs all of epoch 2 and is killed mid-write before epoch 2's checkpoint.
    _fit(_method(tiny_clip, classnames), killed, until_epoch=1)
    shutil.copy(killed / "last.pt", tmp_path / "epoch1.pt")
    _fit(_method(tiny_clip, classnames), killed, resume=True, until_epoch=2)
    shutil.copy(tmp_path / "epoch1.pt", killed / "last.pt")
    with (killed / SCALARS_FILE).open("a") as f:
        f.write('{"step": 13, "loss": 0.')  # a line the kill cut short
    (event_file,) = (killed / TENSORBOARD_DIR).iterdir()
    with event_file.open("ab") as f:
        f.write(b"\x20\x00\x00\x00\x00\x00")  # and half a record header
    assert max(r["step"] for r in read_scalars(killed)) == 12

    spy = Spy()
    result = _fit(_method(tiny_clip, classnames), killed, spy, resume=True)
    assert result.resumed_from == 1 and spy.begun == [6] and spy.logged[0][0] == 7
    resumed, uninterrupted = read_scalars(killed), read_scalars(whole)
    assert [r["step"] for r in resumed] == list(range(1, STEPS + 1))
    assert _without_time(resumed) == _without_time(uninterrupted)
    board, board_whole = _tensorboard(killed / TENSORBOARD_DIR), _tensorboard(whole / TENSORBOARD_DIR)
    assert board == board_whole and [s for s, _ in board["train/loss"]] == list(range(1, STEPS + 1))


def test_ctrl_c_mid_epoch_then_resume_holds_each_step_once(tiny_clip, classnames, tmp_path):
    whole, stopped = tmp_path / "whole", tmp_path / "stopped"
    _fit(_method(tiny_clip, classnames), whole)
    with pytest.raises(KeyboardInterrupt):
        _fit(_method(tiny_clip, classnames), stopped, interrupt_at=10)  # epoch 2, step 4: saved after it
    assert [r["step"] for r in read_scalars(stopped)] == list(range(1, 11))
    _fit(_method(tiny_clip, classnames), stopped, resume=True)
    assert _without_time(read_scalars(stopped)) == _without_time(read_scalars(whole))  # acc too: the sums resume
    assert _tensorboard(stopped / TENSORBOARD_DIR) == _tensorboard(whole / TENSORBOARD_DIR)


def test_the_tracking_key_stays_out_of_the_run_identity():
    default = build_run_config({"method": "coop"})
    assert default.tracking == ["tensorboard", "jsonl"]
    other = build_run_config({"method": "coop", "tracking": ["wandb"]})
    assert other.hash() == default.hash() and "tracking" not in default.identity()
    with pytest.raises(ConfigError, match=r"tracking\[1\]: 'tensorbord' is not one of"):
        build_run_config({"method": "coop", "tracking": ["jsonl", "tensorbord"]})


def test_a_tracker_whose_library_is_missing_is_named_with_its_package(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    with pytest.raises(ConfigError) as e:
        check_trackers(["tensorboard", "jsonl", "mlflow"])
    assert e.value.message == "tracking: mlflow needs the mlflow package, which is not installed"
    assert e.value.hint == "pip install mlflow, or leave it out: --set tracking=[tensorboard,jsonl]"
    check_trackers(["tensorboard", "jsonl"])  # no library needed


def _run_config(data_root, out, *overrides):
    values = {**TINY, "method": "coop", "protocol": "train", "data.dataset": "dtd", "data.root": data_root,
              "out": out, "optim.epochs": 2, "data.batch_size": 4, "data.shots": 4, "shift_images": 0}  # fmt: skip
    return load_run_config(None, values, list(overrides))


def test_a_run_folder_holds_the_scalars_its_log_reports(data_root, tmp_path):
    from restore.engine.runs import run

    result = run(_run_config(data_root, tmp_path / "runs", "log_every=1"))
    records = {r["step"]: r for r in read_scalars(result.run_dir)}
    assert sorted(records) == list(range(1, result.timings["steps"] + 1))
    line = re.compile(r"epoch (\d+)/2 step (\d+)/(\d+): loss (\S+) \(ce (\S+)\) acc (\S+)% lr (\S+)")
    logged = line.findall((result.run_dir / "log.txt").read_text())
    assert len(logged) == len(records)
    for epoch, step, per_epoch, loss, ce, acc, lr in logged:
        r = records[(int(epoch) - 1) * int(per_epoch) + int(step)]
        assert (f"{r['loss']:.4f}", f"{r['ce']:.4f}", f"{r['acc']:.2f}", f"{r['lr']:.3e}") == (loss, ce, acc, lr)
    board = _tensorboard(result.run_dir / TENSORBOARD_DIR)
    assert [s for s, _ in board["train/loss"]] == sorted(records)
    assert "tracking:\n- tensorboard\n- jsonl\n" in (result.run_dir / "config.yaml").read_text()

    quiet = run(_run_config(data_root, tmp_path / "quiet", "tracking=[]"))
    assert not (quiet.run_dir / SCALARS_FILE).exists() and not (quiet.run_dir / TENSORBOARD_DIR).exists()
    assert quiet.run_dir.name == result.run_dir.name  # the same run: tracking is not part of its identity


def test_a_run_asking_for_a_missing_library_writes_nothing(data_root, tmp_path, monkeypatch):
    import importlib.util

    from restore.engine.runs import run

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(ConfigError, match="tracking: wandb needs the wandb package, which is not installed"):
        run(_run_config(data_root, tmp_path / "runs", "tracking=[jsonl,wandb]"))
    assert not (tmp_path / "runs").exists()


class FullDisk:
    def write(self, data):
        raise OSError(28, "No space left on device")

    def close(self):
        pass


@pytest.mark.parametrize("kind", [JsonlTracker, TensorBoardTracker])
def test_a_full_disk_stops_the_file_with_one_warning_not_the_run(tmp_path, capsys, kind):
    tracker = kind(tmp_path / "scalars")
    tracker.begin(0)
    tracker.log(1, {"loss": 1.0})
    tracker._file.close()
    tracker._file = FullDisk()
    for step in (2, 3):
        tracker.log(step, {"loss": 0.5})  # no error: training goes on
    tracker.close()
    assert capsys.readouterr().err == (
        f"warning: tracking stopped writing {tmp_path / 'scalars'}: No space left on device\n"
    )


def test_only_rank_0_writes(tmp_path, monkeypatch):
    from restore import distributed

    monkeypatch.setattr(distributed, "is_main", lambda: False)
    tracker = open_trackers(["tensorboard", "jsonl"], tmp_path)
    tracker.begin(0)
    tracker.log(1, {"loss": 1.0})
    tracker.close()
    assert list(tmp_path.iterdir()) == []


def test_mlflow_gets_the_steps_and_the_config_and_a_resume_continues_its_run(tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps the file store behind a switch
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "tests")
    run_dir = tmp_path / "run"
    config = {"method": {"name": "coop"}, "optim": {"lr": 0.002}}
    # A process checkpoints after step 2 (the trainer flushes its trackers first), logs step 3 and is killed.
    tracker = open_trackers(["mlflow"], run_dir, name="b2n/dtd/coop", config=config)
    tracker.begin(0)
    for s in (1, 2):
        tracker.log(s, {"loss": 1.0 / s, "lr": 0.002})
    tracker.flush()
    tracker.log(3, {"loss": 1.0 / 3, "lr": 0.002})
    # The resumed process continues the same MLflow run after step 2.
    tracker = open_trackers(["mlflow"], run_dir, name="b2n/dtd/coop", config=config)
    tracker.begin(2)
    for s in (3, 4):
        tracker.log(s, {"loss": 1.0 / s, "lr": 0.002})
    tracker.close()
    run_id = json.loads((run_dir / "tracking.json").read_text())["mlflow"]
    client = mlflow.tracking.MlflowClient()
    run = client.get_run(run_id)
    assert run.info.run_name == "b2n/dtd/coop" and run.info.status == "FINISHED"
    assert run.data.params == {"method.name": "coop", "optim.lr": "0.002"}
    history = sorted((m.step, m.value) for m in client.get_metric_history(run_id, "train/loss"))
    assert history == [(1, 1.0), (2, 0.5), (3, 1 / 3), (4, 0.25)]  # each step once
    experiment = client.get_experiment_by_name("tests").experiment_id
    assert len(client.search_runs([experiment])) == 1  # the resume continued the same run

    failing = open_trackers(["mlflow"], tmp_path / "failing", name="failing", config=config)
    failing.begin(0)
    with pytest.raises(RuntimeError):
        try:
            raise RuntimeError("the loss became nan")
        finally:
            failing.close()
    failed_id = json.loads((tmp_path / "failing" / "tracking.json").read_text())["mlflow"]
    assert client.get_run(failed_id).info.status == "FAILED"


def _wandb_records(path):
    """The records of an offline W&B run file: W&B's LevelDB-style log (7-byte header, 32 KiB blocks of
    chunks with a 7-byte header each), each record a `wandb_internal_pb2.Record`."""
    from wandb.proto import wandb_internal_pb2

    blob, at, chunks = path.read_bytes(), 7, b""
    assert blob[:4] == b":W&B"
    while at + 7 <= len(blob):
        if 32768 - at % 32768 < 7:  # a block's tail too short for a chunk header is padding
            at += 32768 - at % 32768
            continue
        length, kind = int.from_bytes(blob[at + 4 : at + 6], "little"), blob[at + 6]
        if kind == 0:
            break
        chunks += blob[at + 7 : at + 7 + length]
        at += 7 + length
        if kind in (1, 4):  # a whole record, or the last chunk of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunks)
            chunks = b""
            yield record


def test_a_run_sends_its_test_metrics_to_the_mlflow_run_its_training_logged_to(data_root, tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    from restore.engine.runs import run

    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "results")
    result = run(_run_config(data_root, tmp_path / "runs", "tracking=[jsonl,mlflow]"))
    run_id = json.loads((result.run_dir / "tracking.json").read_text())["mlflow"]
    client = mlflow.tracking.MlflowClient()
    finished = client.get_run(run_id)
    assert finished.info.status == "FINISHED"
    experiment = client.get_experiment_by_name("results").experiment_id
    assert len(client.search_runs([experiment])) == 1  # the result went on the training's run, not a new one
    metrics = json.loads((result.run_dir / "metrics.json").read_text())["metrics"]
    sent = {k: v for k, v in finished.data.metrics.items() if k.startswith("test/")}
    assert sent == {"test/test_top1": metrics["test"]["top1"], "test/test_top5": metrics["test"]["top5"]}
    history = client.get_metric_history(run_id, "test/test_top1")
    assert [m.step for m in history] == [result.timings["steps"]]  # once, at the run's last step
    assert "train/loss" in finished.data.metrics


def test_final_metrics_flatten_every_evaluated_split():
    metrics = {
        "base": {"top1": 80.0, "top5": 95.0, "n": 10},
        "novel": {"top1": 70.0, "top5": None, "n": 10},
        "hm": 74.67,
        "shift": {"vision": [1.0]},
        "classnames": ["a", "b"],
    }
    assert final_metrics(metrics) == {
        "test/base_top1": 80.0,
        "test/base_top5": 95.0,
        "test/novel_top1": 70.0,
        "test/hm": 74.67,
    }


def test_wandb_offline_gets_the_steps_and_the_config_and_a_resume_continues_its_run(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_PROJECT", "tests")
    run_dir = tmp_path / "run"
    for steps in ([1, 2, 3], [3, 4]):  # the second process resumes after step 2
        time.sleep(1 - time.time() % 1)  # W&B names an offline run's folder by the second it starts in
        tracker = open_trackers(["wandb"], run_dir, name="b2n/dtd/coop", config={"optim": {"lr": 0.002}})
        tracker.begin(steps[0] - 1)
        for s in steps:
            tracker.log(s, {"loss": 1.0 / s})
        tracker.close()
        wandb.teardown()
    # the run's result, sent after its evaluation, goes on the same W&B run (a third process here)
    time.sleep(1 - time.time() % 1)
    tracker = open_trackers(["wandb"], run_dir, name="b2n/dtd/coop", config={"optim": {"lr": 0.002}})
    tracker.summary(4, {"test/base_top1": 81.5, "test/hm": 77.25})
    tracker.close()
    wandb.teardown()  # as at a process's exit: W&B's service writes out everything it holds
    run_id = json.loads((run_dir / "tracking.json").read_text())["wandb"]
    files = sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(files) == 3 and all(f.name == f"run-{run_id}.wandb" for f in files)  # one W&B run, resumed
    logged, summary = [], {}
    for f in files:
        for record in _wandb_records(f):
            if record.WhichOneof("record_type") == "run":
                assert (record.run.display_name, record.run.project) == ("b2n/dtd/coop", "tests")
                config = {u.key: json.loads(u.value_json) for u in record.run.config.update}
                assert config["optim"] == {"lr": 0.002}
            if record.WhichOneof("record_type") == "history":
                items = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item}
                logged.append((record.history.step.num, items["train/loss"]))
            if record.WhichOneof("record_type") == "summary":
                summary.update(
                    {u.key or "/".join(u.nested_key): json.loads(u.value_json) for u in record.summary.update}
                )
    assert logged == [(1, 1.0), (2, 0.5), (3, 1 / 3), (3, 1 / 3), (4, 0.25)]
    assert summary["test/base_top1"] == 81.5 and summary["test/hm"] == 77.25


def test_the_command_line_names_the_missing_package_and_writes_nothing(data_root, tmp_path, monkeypatch):
    import importlib.util

    from typer.testing import CliRunner

    from restore.cli import app

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    args = ["train", "-m", "coop", "-d", "dtd", "-r", str(data_root), "--backbone", "random:tiny", "--workers", "0",
            "--quiet", "-o", str(tmp_path / "runs"), "--set", "tracking=[tensorboard,mlflow]"]  # fmt: skip
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.output.splitlines() == [
        "error: tracking: mlflow needs the mlflow package, which is not installed",
        "  hint: pip install mlflow, or leave it out: --set tracking=[tensorboard]",
    ]
    assert not (tmp_path / "runs").exists()
