"""A run's life, in one place: plan → run directory → train → evaluate → record.

`restore run`/`train`, a sweep worker (local or Ray) and every rank under torchrun go through `run` /
`execute`: `restore.engine.plan` validates and builds (writes nothing), `restore.engine.run_dir` owns the
folder's files, `restore.engine.trainer` trains, `restore.engine.evaluate.evaluate_splits` tests,
`restore.analysis.shift` profiles the feature shift, and `restore.engine.recorder` writes the database row.
Under torchrun every rank plans the run and trains; rank 0 alone writes the directory and the row.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from torch.utils.data import DataLoader

from restore import distributed
from restore.analysis.shift import measure_shifts
from restore.data import ImageDataset, eval_transform, train_transform
from restore.engine import ownership
from restore.engine.device import autocast
from restore.engine.evaluate import evaluate_splits
from restore.engine.plan import RunPlan, plan_run
from restore.engine.progress import RunLog
from restore.engine.recorder import Recorder, new_run_id
from restore.engine.reserve import SpaceReserve
from restore.engine.run_config import RunConfig
from restore.engine.run_dir import (
    CHECKPOINT_FILE,
    LOG_FILE,
    METRICS_FILE,
    MODEL_FILE,
    RUN_FILE,
    RunResult,
    describe_changes,
    prepare_run_dir,
    read_json,
    run_header,
    write_config,
    write_metrics,
    write_split,
)
from restore.engine.tracking import final_metrics, open_trackers
from restore.engine.trainer import Trainer, TrainResult, TrainSettings
from restore.errors import CheckpointError, RestoreError
from restore.fileio import atomic_write_json
from restore.methods.model_file import save_method
from restore.results.grouping import class_subset_note
from restore.results.records import code_version


def _finished_result(plan: RunPlan, info: dict[str, Any]) -> RunResult | None:
    """The result of a run whose metrics.json is written (the last file a run computes), or None.

    A kill after metrics.json but before the database row or run.json say "finished" leaves a finished run:
    the row and run.json are completed from metrics.json, nothing is computed again.
    """
    saved = read_json(plan.run_dir / METRICS_FILE)
    run_id = info.get("run_id")
    if saved is None or run_id is None or saved.get("run_id") != run_id:
        return None
    if saved.get("config_hash") != plan.config.short_hash():
        return None
    metrics, timings = saved["metrics"], saved.get("timings", {})
    recorder = Recorder.for_run(plan, run_id)
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
        info = prepare_run_dir(plan.run_dir, resume=resume, overwrite=overwrite)
        if info is not None and info.get("config_hash") not in (None, c.short_hash()):
            raise CheckpointError(
                f"cannot resume {plan.run_dir}: it holds a run of other settings ({describe_changes(plan.run_dir, c)})",
                hint="resume with the run's own config (its config.yaml), or start a new run without --resume",
            )
        if info is not None and (done := _finished_result(plan, info)) is not None:
            distributed.share_outcome({"run_id": done.run_id, "finished": done})
            return done
        run_id = (info or {}).get("run_id") or new_run_id(c, plan.dataset)
        recorder = Recorder.for_run(plan, run_id)  # opens the database before anything is written in the folder
        reserve = SpaceReserve(plan.run_dir)  # room to record a failure on a disk that fills up
        write_config(plan.run_dir, c)
        write_split(plan)
        started = (info or {}).get("started_at") or time.strftime("%Y-%m-%dT%H:%M:%S%z")
        run_info = {
            "run_id": run_id,
            "status": "running",
            **run_header(plan),
            "backbone_setting": c.model.backbone,
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

        save_method(plan.method, plan.run_dir / MODEL_FILE, extra={"run_id": run_id, "config_hash": c.short_hash()})
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
        write_metrics(plan, run_id, metrics, timings, result.history)
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
    train_set = ImageDataset(plan.data.train.train, augment, on_corrupt=c.data.on_corrupt)
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
        config_hash=c.short_hash(),
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
    """Every evaluation split of the protocol, what the run records beside them (class subset, skipped
    targets), and the trained method's feature-shift profile on its training images."""
    c = plan.config
    metrics, skipped = evaluate_splits(
        plan.method, plan.data.evaluate, image_size=c.data.image_size, batch_size=c.data.eval_batch_size,
        device=plan.device, precision=c.model.precision, workers=c.data.workers, on_corrupt=c.data.on_corrupt,
        log=log, progress=progress,
    )  # fmt: skip
    if c.data.classes != "all":  # reports label a class-subset run "dtd (10/47 classes)"
        kept = class_subset_note([*plan.data.notes, *plan.data.train.notes])
        metrics.setdefault("extra", {})["classes"] = kept or {"subset": False}
    if plan.data.skipped:  # xd/dg targets whose data is not there
        metrics.setdefault("extra", {})["skipped_targets"] = dict(plan.data.skipped)
        for target, why in plan.data.skipped.items():
            log.info(f"skipped target {target}: {why}")
    plan.method.set_classes(plan.data.train.classnames, dataset=plan.dataset_title)
    if c.shift_images > 0 and plan.method.learnable_parameters() and distributed.is_main():
        metrics["shift"] = shift_profile(plan)
        log.info(
            f"feature shift ({metrics['shift']['measure']}, {metrics['shift']['images']} training images): "
            f"vision {sum(metrics['shift']['vision']):.4f}, text {sum(metrics['shift']['text']):.4f}, "
            f"discrepancy {metrics['shift']['discrepancy']:.4g}",
            echo=False,
        )
    return metrics, skipped


def shift_profile(plan: RunPlan) -> dict[str, Any]:
    """The trained method's per-layer feature shift on (up to ``shift_images``) training images: what
    `restore analyze` measures, recorded with every run for the report's curves."""
    c = plan.config
    transform = eval_transform(c.data.image_size)
    items = plan.data.train.train
    items = items[:: max(1, len(items) // c.shift_images)][: c.shift_images]  # spread over the classes
    loader = DataLoader(ImageDataset(items, transform, on_corrupt=c.data.on_corrupt), batch_size=c.data.eval_batch_size)
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
