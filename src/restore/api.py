"""The Python API: what the command line does, as functions.

    import restore

    result = restore.run("b2n", method="maple", dataset="dtd", root="~/data", seed=1, backbone="ViT-B/16")
    print(result.metrics["base"]["top1"], result.metrics["novel"]["top1"], result.metrics["hm"])

    loaded = restore.load_run(result.run_dir)           # the trained model, its preprocessing, its classes
    print(loaded.predict(["photo.jpg"]).top(3))         # paths, folders or PIL images; any class names

    scores = restore.evaluate(result.run_dir, dataset="dtd", root="~/data", protocol="b2n")

Keyword arguments name the common settings (``shots``, ``seed``, ``backbone``, ``epochs``, ``lr``,
``batch_size``, ``device``, ``out``, ``db``, ...); ``options={...}`` sets the method's own options;
``overrides=["optim.warmup_epochs=0"]`` takes any dotted key, as ``--set`` does; ``config=`` a YAML file.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from restore.data import eval_transform
from restore.engine.backbone import load_backbone
from restore.engine.device import resolve_device
from restore.engine.predict import Predictions, check_classnames, predict_images, run_classnames
from restore.engine.run_config import RunConfig, load_run_config
from restore.engine.run_dir import METRICS_FILE, MODEL_FILE, RUN_FILE, RunResult, read_json, read_run_config
from restore.engine.runs import run as run_config
from restore.engine.standalone_eval import evaluate_checkpoint, zeroshot_eval
from restore.errors import CheckpointError, ConfigError
from restore.methods import PromptedCLIP
from restore.methods.model_file import load_method

# Keyword -> dotted config key.
FLAG_KEYS: dict[str, str] = {
    "method": "method",
    "dataset": "data.dataset",
    "root": "data.root",
    "shots": "data.shots",
    "batch_size": "data.batch_size",
    "workers": "data.workers",
    "classes": "data.classes",
    "split_file": "data.split_file",
    "targets": "data.targets",
    "seed": "seed",
    "backbone": "model.backbone",
    "precision": "model.precision",
    "epochs": "optim.epochs",
    "lr": "optim.lr",
    "device": "device",
    "out": "out",
    "db": "db",
    "quiet": "quiet",
    "tag": "tag",
    "protocol": "protocol",
    "schedule": "schedule",
}


def make_config(
    protocol: str = "train",
    *,
    config: str | Path | None = None,
    options: dict[str, Any] | None = None,
    overrides: Sequence[str] = (),
    **settings: Any,
) -> RunConfig:
    """A checked run config from the same pieces the command line takes (file, flags, method options, --set)."""
    unknown = sorted(set(settings) - set(FLAG_KEYS))
    if unknown:
        raise ConfigError(
            f"unknown setting{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}",
            hint=f"valid: {', '.join(sorted(FLAG_KEYS))}, options={{...}} for the method, overrides=['a.b=v']",
        )
    flags = {FLAG_KEYS[k]: v for k, v in settings.items()}
    flags["protocol"] = protocol
    method_overrides = [f"method.{k}={_yaml_value(v)}" for k, v in (options or {}).items()]
    return load_run_config(config, flags, [*method_overrides, *overrides])


def _yaml_value(value: Any) -> str:
    import json

    return json.dumps(value) if not isinstance(value, str) else value


def run(
    protocol: str = "b2n",
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool | None = False,
    run_dir: str | Path | None = None,
    config: str | Path | None = None,
    options: dict[str, Any] | None = None,
    overrides: Sequence[str] = (),
    **settings: Any,
) -> RunResult:
    """Run a protocol (``b2n``, ``xd``, ``dg``, ``fewshot`` or ``train``): train, evaluate every split it
    needs, write the run directory and a results-database row. Returns the metrics and where they are."""
    cfg = make_config(protocol, config=config, options=options, overrides=overrides, **settings)
    return run_config(cfg, resume=resume, overwrite=overwrite, progress=progress, run_dir=run_dir)


def train(**kwargs: Any) -> RunResult:
    """A plain training run: few-shot training on all classes of ``dataset``, evaluated on its test split."""
    return run("train", **kwargs)


@dataclass
class LoadedRun:
    """A finished run read back: its resolved config and metrics, the trained method on its backbone, the
    run's test preprocessing (PIL image -> tensor at the run's image size, as open_clip returns with its
    models) and the classes it classifies by default: every class of its dataset, after base-to-novel the
    base *and* the novel ones."""

    run_dir: Path
    config: RunConfig
    metrics: dict[str, Any]
    info: dict[str, Any]
    method: PromptedCLIP
    preprocess: Callable[[Any], Any]
    classnames: list[str]

    @property
    def model(self) -> PromptedCLIP:
        """The trained method (the same object as ``method``)."""
        return self.method

    def predict(
        self, images: Sequence[Any], *, classes: Sequence[str] | None = None, batch_size: int = 32
    ) -> Predictions:
        """Class probabilities of ``images`` (file paths, folders of images, or PIL images) over ``classes``
        (default: the run's ``classnames``); ``.top(k)`` gives each image's k best (class, probability)."""
        names = list(classes) if classes is not None else self.classnames
        try:
            return predict_images(self.method, self.preprocess, images, names, batch_size=batch_size)
        finally:  # other class names are for this call: the model stays set up for `classnames`
            if self.method.classnames != self.classnames:
                self.method.set_classes(self.classnames)


def load_run(
    run_dir: str | Path,
    *,
    device: str = "cpu",
    backbone: str | None = None,
    classes: Sequence[str] | None = None,
) -> LoadedRun:
    """Rebuild a run's method from its directory, set up for ``classes`` (default: every class of the run's
    dataset); ``backbone`` overrides the backbone setting it recorded."""

    run_dir = Path(run_dir).expanduser()
    config = read_run_config(run_dir)
    if not (run_dir / MODEL_FILE).is_file():
        raise CheckpointError(
            f"{run_dir} holds no trained model ({MODEL_FILE}): the run has not finished",
            hint="continue it with --resume (its config.yaml repeats it), or pass a finished run's folder",
        )
    dev = resolve_device(device)
    clip = load_backbone(backbone or config.model.backbone, dev)
    method = load_method(run_dir / MODEL_FILE, clip, expect_method=config.method_name).to(dev).eval()
    names = check_classnames(classes) if classes is not None else run_classnames(run_dir, config, method.classnames)
    method.set_classes(names)
    metrics_file = read_json(run_dir / METRICS_FILE)
    return LoadedRun(
        run_dir=run_dir,
        config=config,
        metrics=(metrics_file or {}).get("metrics", {}),
        info=read_json(run_dir / RUN_FILE) or {},
        method=method,
        preprocess=eval_transform(config.data.image_size or clip.cfg.vision.image_size),
        classnames=names,
    )


# The Python names of `restore eval` and `restore zeroshot`.
evaluate = evaluate_checkpoint
zeroshot = zeroshot_eval
