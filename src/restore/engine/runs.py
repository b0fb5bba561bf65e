"""A whole run: validate, prepare the protocol's data, train, evaluate every split, record.

`plan_run` does everything a user's input can break — config values, method, backbone, device, dataset
folders — before anything is written, so a bad setting never leaves a run directory or a database row
behind. `execute` then writes the run directory::

    <out>/<protocol>/<dataset>/<method>[-<tag>]/shots<N>_seed<S>-<hash8>/
        config.yaml          the resolved config (every default filled in); `--config` reproduces the run
        log.txt              what happened, appended across resumes
        run.json             run id, status, backbone, code version, times
        checkpoints/last.pt  the training checkpoint of the last finished epoch (resume)
        model.safetensors    the learnable state (restore.methods.checkpoint format)
        metrics.json         per evaluated split top-1/top-5/n (+ HM for base-to-novel), timings, history
        .owner.lock          while a process works here: its lock (`restore.engine.ownership`)

and one row in the results database.

Under torchrun every rank plans the run and trains; rank 0 alone writes the directory and the row
(`restore.scale.distributed`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from torch.utils.data import DataLoader

from restore.analysis.shift import measure_shifts
from restore.clip import CLIP
from restore.config import load_yaml
from restore.data import (
    ImageDataset,
    ProtocolData,
    eval_transform,
    few_shot,
    get_protocol,
    load_dataset,
    train_transform,
)
from restore.data.folder import SPLIT_FILE, FolderSplit, configured_spec, looks_like_path, write_split_file
from restore.data.registry import data_root, get_dataset
from restore.engine import ownership
from restore.engine.backbone import apply_model_options, backbone_label, check_backbone, load_backbone
from restore.engine.checkpointing import differences
from restore.engine.config import RunConfig, build_run_config, resolve
from restore.engine.device import autocast, resolve_device
from restore.engine.evaluate import dataset_title, evaluate
from restore.engine.precision import cast_for_precision
from restore.engine.progress import RunLog
from restore.engine.reserve import SpaceReserve
from restore.engine.seeding import derive_seed, seed_everything
from restore.engine.tracking import check_trackers, final_metrics, open_trackers
from restore.engine.trainer import Trainer, TrainResult, TrainSettings
from restore.errors import CheckpointError, ConfigError, DataError, RestoreError, ResultsError
from restore.fileio import atomic_write_json, atomic_write_text
from restore.methods import PromptedCLIP, build_method
from restore.methods.checkpoint import save_method
from restore.results import RunRecord, open_results
from restore.results.grouping import class_subset_note
from restore.results.records import code_version, harmonic_mean
from restore.results.records import new_run_id as record_run_id
from restore.scale import distributed

CONFIG_FILE = "config.yaml"
LOG_FILE = "log.txt"
RUN_FILE = "run.json"
METRICS_FILE = "metrics.json"
MODEL_FILE = "model.safetensors"
CHECKPOINT_FILE = Path("checkpoints") / "last.pt"


@dataclass
class RunResult:
    """What a run produced. ``metrics`` is the results-database layout: ``{split: {"top1", "top5", "n"}}``
    plus ``"hm"`` for base-to-novel."""

    run_dir: Path
    run_id: str
    status: str
    config: RunConfig
    metrics: dict[str, Any]
    timings: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)

    def top1(self, split: str) -> float:
        return float(self.metrics[split]["top1"])

    def summary(self) -> str:
        parts = [f"{k} {v['top1']:.2f}" for k, v in self.metrics.items() if isinstance(v, dict) and "top1" in v]
        if "hm" in self.metrics:
            parts.append(f"HM {self.metrics['hm']:.2f}")
        skipped = (self.metrics.get("extra") or {}).get("skipped_targets") or {}
        parts += [f"(skipped {target}: {why})" for target, why in skipped.items()]
        return "  ".join(parts)


@dataclass
class RunPlan:
    """A validated, resolved run: everything loaded, nothing written yet."""

    config: RunConfig
    device: torch.device
    dataset: str  # canonical registry name (dtd)
    dataset_title: str  # the CoOp class name methods key their per-dataset defaults on (DescribableTextures)
    data: Any  # restore.data.ProtocolData
    clip: CLIP
    backbone: str  # how results name it
    run_dir: Path
    method: PromptedCLIP
    # Metrics of an earlier run of the same model on the same test splits (`same_model_key`): recorded for
    # this run instead of evaluating again; `reused_from` names that run in the log.
    reuse_metrics: dict[str, Any] | None = None
    reused_from: str | None = None


def same_model_key(plan: RunPlan) -> str | None:
    """Runs with the same key test the same model on the same splits: a method without learnable parameters
    (zero-shot CLIP) is not changed by its training set, so runs that differ only in shots are one evaluation
    (`restore run fewshot -m zeroshot --shots 1 2 4 8 16`). None for a method that trains."""
    if plan.method.learnable_parameters():
        return None
    c = plan.config
    return dataclasses.replace(c, data=dataclasses.replace(c.data, shots=0)).hash()


# --- planning (validation) ------------------------------------------------------------------------------
def run_dir_for(config: RunConfig, dataset: str) -> Path:
    """``<out>/<protocol>/<dataset>/<method>[-<tag>]/shots<N>_seed<S>-<hash8>``: says what the run is."""
    method = config.method_name + (f"-{_slug(config.tag)}" if config.tag else "")
    shots = "all" if config.data.shots <= 0 else str(config.data.shots)
    leaf = f"shots{shots}_seed{config.seed}-{config.hash()[:8]}"
    return Path(config.out) / config.protocol / _slug(_dataset_dir_name(dataset)) / method / leaf


def _dataset_dir_name(dataset: str) -> str:
    """An image folder's runs go under its folder name (its path is in config.yaml), not a slug of the path."""
    return Path(dataset).name if looks_like_path(dataset) else dataset


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text) or "_"


def run_dataset(config: RunConfig) -> Any:
    """The run's dataset spec: the registered dataset or image folder with the run's split settings."""
    d = config.data
    return configured_spec(
        d.dataset, split_file=d.split_file, split=FolderSplit(d.split_seed, d.split_val, d.split_test)
    )


def _check_dataset(config: RunConfig) -> tuple[Any, str, Path]:
    name = config.data.dataset
    if not name:
        raise ConfigError(
            "no dataset given", hint="pass --dataset NAME (see `restore data list`) or the path of an image folder"
        )
    spec = run_dataset(config)
    root = data_root(name, config.data.root).expanduser()
    # A generated dataset makes its root (read_dataset); an image folder needs none.
    if spec.generate is None and spec.location is None and not root.is_dir():
        raise DataError(f"data root {root} does not exist", hint="pass --root: the folder holding the dataset folders")
    return spec, spec.title, root


def prepare_data(config: RunConfig, dataset: Any, root: Path) -> Any:
    """The protocol's training splits and evaluation splits (``restore.data.ProtocolData``). ``dataset``: a
    name or the spec `run_dataset` gives."""
    d = config.data
    if config.protocol == "train":
        splits = few_shot(load_dataset(dataset, root, classes=d.classes), d.shots, config.seed, strict=d.strict_shots)
        return ProtocolData("train", splits, {"test": splits})
    options = {"targets": d.targets} if config.protocol in ("xd", "dg") else {}
    return get_protocol(config.protocol, **options).build(
        dataset, root, shots=d.shots, seed=config.seed, classes=d.classes, strict=d.strict_shots
    )


def plan_run(config: RunConfig | dict[str, Any], *, run_dir: str | Path | None = None) -> RunPlan:
    """Validate and resolve ``config``; load the backbone and the data; build the method. Writes nothing."""
    if not isinstance(config, RunConfig):
        config = build_run_config(config)
    device = distributed.rank_device(resolve_device(config.device))
    distributed.init_from_env(device)  # under torchrun: join the process group (nothing otherwise)
    check_backbone(config.model.backbone)
    spec, title, root = _check_dataset(config)
    dataset = spec.name
    config = dataclasses.replace(config, data=dataclasses.replace(config.data, root=root))
    data = prepare_data(config, spec, root)
    clip = apply_model_options(load_backbone(config.model.backbone, device), config.model)
    resolved = resolve(config, image_size=clip.cfg.vision.image_size, device_type=device.type)
    check_trackers(resolved.tracking)  # a tracker whose library is missing fails before anything is written
    with torch.random.fork_rng(devices=[]):
        seed_everything(derive_seed(resolved.seed, "init"))
        method = build_method(resolved.method, clip, data.train.classnames, title).to(device)
    cast_for_precision(method, resolved.model.precision)  # fp16: half weights as the authors ran
    _check_eval_classes(method, data, title)
    data.check(training=resolved.epochs > 0 and bool(method.learnable_parameters()))  # before anything is written
    return RunPlan(
        config=resolved,
        device=device,
        dataset=dataset,
        dataset_title=title,
        data=data,
        clip=clip,
        backbone=backbone_label(resolved.model.backbone, clip),
        run_dir=Path(run_dir) if run_dir is not None else run_dir_for(resolved, dataset),
        method=method,
    )


def _check_eval_classes(method: PromptedCLIP, data: Any, title: str) -> None:
    """Set up the method for each evaluated split's classes once, so a class name that does not fit the text
    encoder (or a class set the method cannot take) fails now, not after training; then back to training."""
    for splits in data.evaluate.values():
        method.set_classes(splits.classnames, dataset=dataset_title(splits.name))
    method.set_classes(data.train.classnames, dataset=title)


# --- run directory --------------------------------------------------------------------------------------
def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _prepare_run_dir(run_dir: Path, *, resume: bool, overwrite: bool) -> dict[str, Any] | None:
    """The previous run.json when resuming; refuses to mix a new run into a directory that holds one."""
    info = _read_json(run_dir / RUN_FILE)
    holds_run = any((run_dir / p).exists() for p in (CHECKPOINT_FILE, MODEL_FILE, METRICS_FILE))
    if overwrite and run_dir.exists():
        for child in run_dir.iterdir():  # everything but the lock this process holds on the folder
            if child.name != ownership.LOCK_FILE:
                shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
        return None
    if holds_run and not resume:
        state = (info or {}).get("status", "unfinished")
        raise ConfigError(
            f"run directory {run_dir} already holds a {state} run of this config",
            hint="pass --resume to continue (or re-report) it, or --overwrite to start it again",
        )
    return info if resume else None


def _read_config_identity(run_dir: Path) -> dict[str, Any]:
    try:
        return read_run_config(run_dir).identity()
    except RestoreError:
        return {}


def _describe_changes(previous: dict[str, Any], config: RunConfig) -> str:
    diffs = differences(previous, config.identity())
    return "; ".join(f"{k}: {a!r} before, {b!r} now" for k, a, b in diffs[:6]) or "its config.yaml is unreadable"


def _write_config(run_dir: Path, config: RunConfig) -> None:
    command = "restore train" if config.protocol == "train" else f"restore run {config.protocol}"
    header = f"# resolved run config: `{command} --config config.yaml` repeats this run\n"
    atomic_write_text(run_dir / CONFIG_FILE, header + yaml.safe_dump(config.to_dict(), sort_keys=False))


def _write_split(plan: RunPlan) -> None:
    """A run of an image folder records the split it drew (a CoOp split file beside its config.yaml)."""
    spec = get_dataset(plan.dataset)
    if spec.location is not None and not plan.config.data.split_file:
        whole = load_dataset(run_dataset(plan.config), plan.config.data.root or spec.location)
        write_split_file(whole, plan.run_dir / SPLIT_FILE)


def read_run_config(run_dir: str | Path) -> RunConfig:
    """The resolved config a run directory holds."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise ConfigError(f"{run_dir} is not a run directory (no {CONFIG_FILE})", hint="pass the folder a run wrote")
    return build_run_config(load_yaml(path))


# --- results database -----------------------------------------------------------------------------------
def db_location(config: RunConfig) -> str | None:
    if config.db is not None:
        return None if config.db.strip().lower() in ("none", "off", "") else config.db
    return os.environ.get("RESTORE_RESULTS_DB") or str(Path(config.out) / "results.sqlite")


class _Recorder:
    """The run's row in the results database (a no-op without a database)."""

    def __init__(self, plan: RunPlan, run_id: str) -> None:
        """Opens the database (a bad --db fails here, before anything is written); `start` adds the row."""
        self.store = None
        self.run_id = run_id
        self.plan = plan
        location = db_location(plan.config)
        if location is None:
            return

        self.store = open_results(location)

    def start(self) -> None:
        if self.store is None:
            return

        plan, run_id = self.plan, self.run_id
        c = plan.config
        record = RunRecord.new(
            method=c.method_name,
            dataset=plan.dataset,
            protocol=c.protocol,
            seed=c.seed,
            backbone=plan.backbone,
            config=c.identity(),
            shots=c.data.shots if c.data.shots > 0 else 0,
            tag=c.tag,
            run_dir=str(plan.run_dir.resolve()),
            run_id=run_id,
        )
        self.store.start_run(record)

    def finish_saved(self, metrics: dict[str, Any], timings: dict[str, Any]) -> None:
        """The row of a run whose metrics.json is written: finished with those metrics, whatever state a kill
        left it in (missing, running, interrupted, failed, or finished already)."""
        if self.store is None:
            return

        try:
            status = self.store.get(self.run_id).status
        except ResultsError:
            status = None
        if status != "finished":
            self.start()
            self.store.finish_run(self.run_id, metrics, timings)

    def heartbeat(self) -> None:
        if self.store is not None:
            self.store.heartbeat(self.run_id)

    def finish(self, metrics: dict[str, Any], timings: dict[str, Any]) -> None:
        if self.store is not None:
            self.store.finish_run(self.run_id, metrics, timings)

    def fail(self, error: str, metrics: dict[str, Any], timings: dict[str, Any]) -> None:
        if self.store is not None:
            self.store.fail_run(self.run_id, error, metrics, timings)

    def interrupt(self) -> None:
        if self.store is not None:
            self.store.interrupt_run(self.run_id, "interrupted (Ctrl-C); resume with --resume")

    def close(self) -> None:
        if self.store is not None:
            self.store.close()


def new_run_id(plan: RunPlan) -> str:
    c = plan.config
    return record_run_id(c.method_name, plan.dataset, c.protocol, c.seed)


# --- executing ------------------------------------------------------------------------------------------
def _image_dataset(items: list, transform: Any, on_corrupt: str) -> Any:
    return ImageDataset(items, transform, on_corrupt=on_corrupt)


def _finished_result(plan: RunPlan, info: dict[str, Any]) -> RunResult | None:
    """The result of a run whose metrics.json is written (the last file a run computes), or None.

    A kill after metrics.json but before the database row or run.json say "finished" leaves a finished run:
    the row and run.json are completed from metrics.json, nothing is computed again.
    """
    saved = _read_json(plan.run_dir / METRICS_FILE)
    run_id = info.get("run_id")
    if saved is None or run_id is None or saved.get("run_id") != run_id:
        return None
    if saved.get("config_hash") != plan.config.hash():
        return None
    metrics, timings = saved["metrics"], saved.get("timings", {})
    recorder = _Recorder(plan, run_id)
    try:
        recorder.finish_saved(metrics, timings)
    finally:
        recorder.close()
    if info.get("status") != "finished":
        info = {**info, "status": "finished", "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        info.pop("error", None)
        atomic_write_json(plan.run_dir / RUN_FILE, info)
    return RunResult(plan.run_dir, run_id, "finished", plan.config, metrics, timings, saved.get("history", []))


def execute(plan: RunPlan, *, resume: bool = False, overwrite: bool = False, progress: bool | None = None) -> RunResult:
    """Train and evaluate a planned run, writing its directory and its database row."""
    world = distributed.current()
    if world is not None and not world.is_main:
        return _follow(plan, resume=resume)
    try:  # the run directory is this process's until the run ends (or the process dies)
        lock = ownership.acquire(plan.run_dir)
    except BaseException as e:
        distributed.share_outcome(error=e)  # the other ranks stop with the same message
        raise
    try:
        return _execute_owned(plan, resume=resume, overwrite=overwrite, progress=progress)
    finally:
        lock.release(remove_empty=True)  # a run refused before it started leaves no folder it created


def _execute_owned(plan: RunPlan, *, resume: bool, overwrite: bool, progress: bool | None) -> RunResult:
    c = plan.config
    reserve: SpaceReserve | None = None
    try:
        info = _prepare_run_dir(plan.run_dir, resume=resume, overwrite=overwrite)
        if info is not None and info.get("config_hash") not in (None, c.hash()):
            previous = _read_config_identity(plan.run_dir)
            raise CheckpointError(
                f"cannot resume {plan.run_dir}: it holds a run of other settings ({_describe_changes(previous, c)})",
                hint="resume with the run's own config (its config.yaml), or start a new run without --resume",
            )
        if info is not None and (done := _finished_result(plan, info)) is not None:
            distributed.share_outcome({"run_id": done.run_id, "finished": done})
            return done
        run_id = (info or {}).get("run_id") or new_run_id(plan)
        recorder = _Recorder(plan, run_id)  # opens the database before anything is written in the folder
        reserve = SpaceReserve(plan.run_dir)  # room to record a failure on a disk that fills up
        _write_config(plan.run_dir, c)
        _write_split(plan)
        started = (info or {}).get("started_at") or time.strftime("%Y-%m-%dT%H:%M:%S%z")
        run_info = {
            "run_id": run_id,
            "status": "running",
            "method": c.method_name,
            "dataset": plan.dataset,
            "protocol": c.protocol,
            "shots": c.data.shots,
            "seed": c.seed,
            "backbone": plan.backbone,
            "backbone_setting": c.model.backbone,
            "config_hash": c.hash(),
            "code_version": code_version(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started_at": started,
        }
        atomic_write_json(plan.run_dir / RUN_FILE, run_info)
        recorder.start()  # after run.json names the run id: a resume finds and reuses this row
    except BaseException as e:
        if reserve is not None:
            reserve.free()
        distributed.share_outcome(error=e)  # the other ranks stop with the same message
        raise
    distributed.share_outcome({"run_id": run_id, "finished": None})
    log = RunLog(plan.run_dir / LOG_FILE, quiet=c.quiet)
    metrics: dict[str, Any] = {}
    timings: dict[str, Any] = {}
    t_start = time.perf_counter()
    try:
        log.info(f"run {run_id}: {c.method_name} on {plan.dataset} ({c.protocol}), seed {c.seed}, shots {c.data.shots}")
        log.info(f"run directory {plan.run_dir}", echo=False)
        for note in plan.data.train.notes:
            log.info(f"data: {note}", echo=False)
        train_set = _train_set(plan, log)
        result = _train(plan, train_set, log, resume=resume, progress=progress, heartbeat=recorder.heartbeat)

        save_method(plan.method, plan.run_dir / MODEL_FILE, extra={"run_id": run_id, "config_hash": c.hash()})
        timings.update(train_s=round(result.train_s, 3), steps=result.steps, epochs=result.epochs)
        if result.resumed_from is not None:
            timings["resumed_after_epoch"] = result.resumed_from
        t_eval = time.perf_counter()
        if plan.reuse_metrics is not None:
            metrics, skipped = json.loads(json.dumps(plan.reuse_metrics)), 0
            log.info(
                f"evaluation: the same model on the same test splits as {plan.reused_from} (no learnable "
                "parameters, so the shots change nothing); its metrics are recorded, not computed again"
            )
        else:
            metrics, skipped = _evaluate_all(plan, log, progress=progress)
        skipped += len(getattr(train_set, "skipped", []))
        timings["eval_s"] = round(time.perf_counter() - t_eval, 3)
        timings["total_s"] = round(time.perf_counter() - t_start, 3)
        if skipped:
            metrics["skipped_images"] = skipped
        _write_metrics(plan, run_id, metrics, timings, result.history)
        _send_result(plan, metrics, result.steps)
        recorder.finish(metrics, timings)
        run_info.update(status="finished", finished_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        atomic_write_json(plan.run_dir / RUN_FILE, run_info)
        log.info(f"finished: {RunResult(plan.run_dir, run_id, 'finished', c, metrics).summary()}", echo=False)
        return RunResult(plan.run_dir, run_id, "finished", c, metrics, timings, result.history)
    except KeyboardInterrupt:
        reserve.free()
        _record_end(log, "interrupted; continue with --resume", recorder.interrupt)
        run_info.update(status="interrupted")
        _record_end(log, None, lambda: atomic_write_json(plan.run_dir / RUN_FILE, run_info))
        raise
    except BaseException as e:
        message = e.message if isinstance(e, RestoreError) else f"{type(e).__name__}: {e}"
        timings["total_s"] = round(time.perf_counter() - t_start, 3)
        reserve.free()  # a full disk: the room kept aside lets the failure be written down
        _record_end(log, f"failed: {message}", lambda: recorder.fail(message, {}, timings))
        run_info.update(status="failed", error=message)
        _record_end(log, None, lambda: atomic_write_json(plan.run_dir / RUN_FILE, run_info))
        raise
    finally:
        reserve.free()
        log.close()
        recorder.close()


def _record_end(log: RunLog, line: str | None, write: Any) -> None:
    """Log `line` and record how the run ended with `write()`, never letting a second failure (the full disk
    or the locked database that may have caused the first) hide the error the run stopped with."""
    if line is not None:
        log.info(line, echo=False)
    try:
        write()
    except Exception as e:  # reported in the log; the run's own error propagates
        log.info(f"could not record the end of the run: {getattr(e, 'message', e)}", echo=False)


def _follow(plan: RunPlan, *, resume: bool) -> RunResult:
    """A rank other than 0 of a distributed run: train its share of each batch and evaluate its shard of each
    split, writing nothing (rank 0 prepares the run directory, then writes the checkpoints and results)."""
    shared = distributed.receive_outcome()
    if shared["finished"] is not None:
        return shared["finished"]
    log = RunLog(quiet=True)
    t_start = time.perf_counter()
    result = _train(plan, _train_set(plan, log), log, resume=resume, progress=False, heartbeat=lambda: None)
    metrics, _ = _evaluate_all(plan, log, progress=False)
    timings = {"train_s": round(result.train_s, 3), "total_s": round(time.perf_counter() - t_start, 3)}
    return RunResult(plan.run_dir, shared["run_id"], "finished", plan.config, metrics, timings, result.history)


def _train_set(plan: RunPlan, log: RunLog) -> Any:
    """The training images (None when the run does not train); with on_corrupt=skip, bad files left out."""
    c = plan.config
    if c.epochs == 0 or not plan.method.learnable_parameters():
        return None
    augment = train_transform(c.data.image_size, c.data.crop_min_scale)
    train_set = _image_dataset(plan.data.train.train, augment, c.data.on_corrupt)
    for note in getattr(train_set, "notes", []):
        log.info(f"data: {note}")
    return train_set


def _train(
    plan: RunPlan, train_set: Any, log: RunLog, *, resume: bool, progress: bool | None, heartbeat
) -> TrainResult:
    c = plan.config
    if train_set is None:
        log.info(f"no training: {c.method_name} has {'no epochs' if c.epochs == 0 else 'nothing to learn'}")
        return TrainResult(epochs=0, steps=0)
    settings = TrainSettings(
        epochs=c.epochs,
        lr=c.lr,
        batch_size=c.batch_size,
        seed=c.seed,
        warmup_epochs=c.optim.warmup_epochs,
        warmup_lr=c.optim.warmup_lr,
        momentum=c.optim.momentum,
        weight_decay=c.optim.weight_decay,
        optimizer=c.optim.optimizer,
        workers=c.data.workers,
        precision=c.model.precision,
        log_every=c.log_every,
    )
    tracker = open_trackers(c.tracking, plan.run_dir, name=_tracking_name(plan), config=c.to_dict())
    trainer = Trainer(
        plan.method,
        train_set,
        settings,
        device=plan.device,
        checkpoint=plan.run_dir / CHECKPOINT_FILE,
        config_hash=c.hash(),
        identity=c.identity(),
        log=log,
        progress=progress,
        on_epoch_end=lambda epoch, summary: heartbeat(),
        tracker=tracker,
    )
    try:
        return trainer.fit(resume=resume)
    finally:
        tracker.close()


def _tracking_name(plan: RunPlan) -> str:
    """The run's name in W&B / MLflow: its folder below the output root (b2n/dtd/coop/shots16_seed1-…)."""
    c = plan.config
    return plan.run_dir.relative_to(c.out).as_posix() if plan.run_dir.is_relative_to(c.out) else plan.run_dir.name


def _send_result(plan: RunPlan, metrics: dict[str, Any], steps: int) -> None:
    """The run's test metrics to the trackers its training logged to: W&B and MLflow put them on the same run;
    the files leave them to metrics.json (their `summary` writes nothing)."""
    c = plan.config
    tracker = open_trackers(c.tracking, plan.run_dir, name=_tracking_name(plan), config=c.to_dict())
    try:
        tracker.summary(steps, final_metrics(metrics))
    finally:
        tracker.close()


def _evaluate_all(plan: RunPlan, log: RunLog, *, progress: bool | None) -> tuple[dict[str, Any], int]:
    c = plan.config
    metrics: dict[str, Any] = {}
    skipped = 0
    transform = eval_transform(c.data.image_size)
    for label, splits in plan.data.evaluate.items():
        test_set = _image_dataset(splits.test, transform, c.data.on_corrupt)
        skipped += len(getattr(test_set, "skipped", []))
        r = evaluate(
            plan.method,
            test_set,
            splits.classnames,
            batch_size=c.data.eval_batch_size,
            device=plan.device,
            precision=c.model.precision,
            workers=c.data.workers,
            label=label,
            dataset_name=dataset_title(splits.name),
            log=log,
            progress=progress,
        )
        metrics[label] = {"top1": r["top1"], "top5": r["top5"], "n": r["n"]}
    if c.protocol == "b2n":
        metrics["hm"] = harmonic_mean(metrics["base"]["top1"], metrics["novel"]["top1"])
    if c.data.classes != "all":  # reports label a class-subset run "dtd (10/47 classes)"
        kept = class_subset_note([*plan.data.notes, *plan.data.train.notes])
        metrics.setdefault("extra", {})["classes"] = kept or {"subset": False}
    if plan.data.skipped:  # xd/dg targets whose data is not there
        metrics.setdefault("extra", {})["skipped_targets"] = dict(plan.data.skipped)
        for target, why in plan.data.skipped.items():
            log.info(f"skipped target {target}: {why}")
    plan.method.set_classes(plan.data.train.classnames, dataset=plan.dataset_title)
    if c.shift_images > 0 and plan.method.learnable_parameters() and distributed.is_main():
        metrics["shift"] = _shift_profile(plan, transform)
        log.info(
            f"feature shift ({metrics['shift']['measure']}, {metrics['shift']['images']} training images): "
            f"vision {sum(metrics['shift']['vision']):.4f}, text {sum(metrics['shift']['text']):.4f}, "
            f"discrepancy {metrics['shift']['discrepancy']:.4g}",
            echo=False,
        )
    return metrics, skipped


def _shift_profile(plan: RunPlan, transform: Any) -> dict[str, Any]:
    """The trained method's per-layer feature shift on (up to ``shift_images``) training images: what
    `restore analyze` measures, recorded with every run for the report's curves."""

    c = plan.config
    items = plan.data.train.train
    items = items[:: max(1, len(items) // c.shift_images)][: c.shift_images]  # spread over the classes
    loader = DataLoader(_image_dataset(items, transform, c.data.on_corrupt), batch_size=c.data.eval_batch_size)
    settings = plan.method.restore_settings
    with autocast(plan.device, c.model.precision):
        profile = measure_shifts(
            plan.method,
            loader,
            measure=settings.get("shift_measure", "activation"),
            normalisation=settings.get("normalisation", "rms"),
            device=plan.device,
        )
    return {
        "measure": profile.measure,
        "vision": profile.vision,
        "text": profile.text,
        "discrepancy": sum(profile.discrepancy),
        "discrepancy_per_layer": profile.discrepancy,
        "images": profile.images,
    }


def _write_metrics(
    plan: RunPlan, run_id: str, metrics: dict[str, Any], timings: dict[str, Any], history: list[dict[str, float]]
) -> None:
    c = plan.config
    atomic_write_json(
        plan.run_dir / METRICS_FILE,
        {
            "run_id": run_id,
            "method": c.method_name,
            "dataset": plan.dataset,
            "protocol": c.protocol,
            "shots": c.data.shots,
            "seed": c.seed,
            "backbone": plan.backbone,
            "config_hash": c.hash(),
            "metrics": metrics,
            "timings": timings,
            "history": history,
            "notes": list(plan.data.train.notes),
            "classnames": run_classnames(plan),
        },
    )


def run_classnames(plan: RunPlan) -> list[str]:
    """Every class of the run's dataset in label order, recorded so that `restore predict` classifies all of
    them by default: the training classes, and after base-to-novel the novel ones behind them."""
    names = list(plan.data.train.classnames)
    novel = plan.data.evaluate.get("novel") if plan.config.protocol == "b2n" else None
    return names + [n for n in (novel.classnames if novel is not None else []) if n not in names]


def run(
    config: RunConfig | dict[str, Any],
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool | None = None,
    run_dir: str | Path | None = None,
) -> RunResult:
    """Plan (validate) and execute one run."""
    return execute(plan_run(config, run_dir=run_dir), resume=resume, overwrite=overwrite, progress=progress)
