"""Planning a run: everything a user's input can break is checked here, before anything is written.

`plan_run` validates the config, resolves it (`restore.engine.run_config.resolve`), loads the backbone and the
protocol's data and builds the method. A bad setting never leaves a run directory or a database row behind.
`run_dir_for` names the folder the run will own (`restore.engine.run_dir` writes it).
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from restore import distributed
from restore.clip import CLIP
from restore.clip.architectures import get_config
from restore.data import ProtocolData, few_shot, get_protocol, load_dataset
from restore.data.folder import FolderSplit, configured_spec, looks_like_path
from restore.data.registry import data_root
from restore.engine.backbone import apply_model_options, backbone_label, check_backbone, load_backbone
from restore.engine.device import resolve_device
from restore.engine.evaluate import dataset_title
from restore.engine.precision import cast_for_precision
from restore.engine.run_config import RunConfig, build_run_config, resolve, resolve_precision
from restore.engine.seeding import derive_seed, seed_everything
from restore.engine.tracking import check_trackers
from restore.errors import ConfigError, DataError
from restore.methods import PromptedCLIP, build_method


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


@functools.lru_cache(maxsize=16)
def backbone_image_size(spec: str) -> int:
    """The input resolution of a backbone setting, from its architecture name without loading weights when
    it has one (``ViT-B/16``, ``random:tiny``); otherwise the weights are loaded once (on the CPU)."""
    s = spec.strip()
    try:
        return get_config(s.split(":", 1)[1] if s.lower().startswith("random:") else s).vision.image_size
    except ConfigError:
        return load_backbone(s, "cpu").cfg.vision.image_size


def record_configs(config: RunConfig, device_type: str) -> list[RunConfig]:
    """The resolved config(s) a run of ``config`` records on a ``device_type`` ('cpu' or 'cuda') machine, by
    the `resolve` that `plan_run` calls, without loading data (nor weights when the backbone's name gives its
    image size). A sweep asks this for the hashes it skips finished cells by: one per precision the device
    may pick (``auto`` on CUDA: bf16 where the GPU supports it, else amp)."""
    precision = config.model.precision
    if device_type == "cuda":
        precisions = ("bf16", "amp") if precision == "auto" else (precision,)
    else:
        precisions = (resolve_precision(precision, "cpu"),)
    fp32 = dataclasses.replace(config, model=dataclasses.replace(config.model, precision="fp32"))
    base = resolve(fp32, image_size=backbone_image_size(config.model.backbone), device_type="cpu")
    return [dataclasses.replace(base, model=dataclasses.replace(base.model, precision=p)) for p in precisions]


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


def run_classnames(plan: RunPlan) -> list[str]:
    """Every class of the run's dataset in label order, recorded so that `restore predict` classifies all of
    them by default: the training classes, and after base-to-novel the novel ones behind them."""
    names = list(plan.data.train.classnames)
    novel = plan.data.evaluate.get("novel") if plan.config.protocol == "b2n" else None
    return names + [n for n in (novel.classnames if novel is not None else []) if n not in names]
