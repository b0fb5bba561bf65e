"""The run config: what to train (method and its options), on what (dataset, protocol, shots, seed, backbone),
how (optimiser, precision, device), and where results go.

A YAML file, the command line's flags and ``--set a.b=value`` overrides all build one nested mapping, which
`build_run_config` checks key by key (unknown keys and bad values raise `ConfigError` listing the valid ones).
`resolve` then fills every value a run leaves open (lr/epochs/batch size from the run's schedule set, the
backbone's image size, the precision for the device), so the ``config.yaml`` a run writes says exactly what
ran, and reading it back gives the same config and the same hash.

The schedule set (``schedule: own | restore_paper``, `restore.methods.schedules`) fills values under the
user's: method defaults < schedule set < YAML < flags < ``--set``. Its method settings (e.g. IVLP's tokens
and depth) are filled when the config is built from a mapping; its lr/epochs/batch size by `resolve`.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from restore import plugins
from restore.data import get_dataset
from restore.data.registry import default_root_for
from restore.engine.evaluate import dataset_title
from restore.errors import ConfigError, RestoreError
from restore.methods import MethodConfig, make_config, method_class
from restore.methods.schedules import DEFAULT_SET, SET_HELP, check_set, schedule_settings
from restore.options import apply_overrides, from_dict, load_yaml, option, to_dict
from restore.results.records import config_hash

PROTOCOLS = ("train", "b2n", "xd", "dg", "fewshot")
Protocol = Literal["train", "b2n", "xd", "dg", "fewshot"]
Precision = Literal["auto", "fp32", "amp", "bf16", "fp16"]
ScheduleSet = Literal["own", "restore_paper"]
TrackerName = Literal["tensorboard", "jsonl", "wandb", "mlflow"]

# Keys that say where a run's outputs go or how it reports, not what it computes: they are left out of the
# run's identity (its hash, the run directory name, the resume check).
# (data.workers only decides who loads the images: each one's augmentation is seeded from (seed, epoch,
#  index) whatever process draws it (restore.engine.seeding.SampleSeeded), so 0 or 8 workers give the same
#  tensors; tests/reliability/test_failures.py compares them. A resume may use other workers.)
# (data.strict_shots only decides whether a short class is an error: a run it lets through is the same run.)
ADMIN_KEYS = (
    "out", "db", "quiet", "log_every", "shift_images", "tracking", "device", "data.root", "data.eval_batch_size",
    "data.workers", "data.strict_shots", "model.text_packing", "model.text_chunk", "model.text_checkpointing",
    "model.compile", "imports",
)  # fmt: skip
# (the model.* speed and memory switches change no result beyond float rounding)
# (imports says where the method's or dataset's code comes from; the method and dataset names are the identity)

# Keys added after runs existed: at their default value they are left out of the identity, so an earlier run
# keeps its hash (its directory, its resume check, its "already done" in a sweep).
OPTIONAL_KEYS = (
    "data.split_file", "data.split_seed", "data.split_val", "data.split_test", "data.targets",
)  # fmt: skip

# Upper bounds of counts, far above any real run, checked when the config is read: an absurd value is one
# clear error before anything is allocated or written, not a 512 GB allocation or an overflow in SQLite.
MAX_SEED = 2**32 - 1  # NumPy's seed range
MAX_COUNT = 1_000_000  # shots, epochs, chunk sizes, image counts
MAX_BATCH = 65_536
MAX_WORKERS = 256
MAX_IMAGE_SIZE = 1024  # pixels a side: ViT-B/16 at 1024 is already 4,096 tokens an image


def default_workers() -> int:
    """Loader workers by default: the CPU cores this process may use, at most 4. More workers than cores only
    makes torch warn that the loader "may freeze" (and buys nothing); the count never changes a result."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(4, cores))


@dataclass
class ModelSection:
    backbone: str = option(
        "ViT-B/16",
        help="CLIP weights: an architecture name (ViT-B/16, ViT-B/32, ViT-L/14), a checkpoint file or folder, "
        "random:<arch> (random weights, for smoke tests), or world (the synthetic world's tiny CLIP)",
    )
    precision: Precision = option(  # noqa: RUF009  (option() is dataclasses.field)
        "auto",
        help="auto: fp32 on CPU; on CUDA bf16 where the GPU supports it, else amp. amp: fp16 autocast + loss "
        "scaling, weights fp32; bf16: bf16 autocast; fp16: CLIP and the prompts in half, plain SGD, as the "
        "authors ran (CUDA); see docs/precision.md",
    )
    text_packing: bool = option(True, help="encode each distinct class-prompt prefix once (exact; faster)")
    text_chunk: int = option(
        0,
        help="encode the class prompts this many at a time (0: all at once); with text_checkpointing, "
        "ImageNet's 1,000 classes fit in ~2.3 GiB at ~25% more time",
        min=0,
        max=MAX_COUNT,
    )
    text_checkpointing: bool = option(
        False, help="recompute the text tower in the backward pass (per chunk, or per block) to save memory"
    )
    compile: bool = option(False, help="torch.compile each block's MLP tail (first step compiles for minutes)")


@dataclass
class DataSection:
    dataset: str = option("", help="dataset name from `restore data list` (e.g. dtd, DescribableTextures)")
    root: Path | None = option(None, help="folder holding the dataset folders (CoOp's DATA); default $RESTORE_DATA")  # noqa: RUF009
    shots: int = option(16, help="training images per class; -1 or 0: all", min=-1, max=MAX_COUNT)
    batch_size: int | None = option(
        None, help="training batch size; null: the schedule set's value", min=1, max=MAX_BATCH
    )
    eval_batch_size: int = option(100, help="batch size at evaluation", min=1, max=MAX_BATCH)
    workers: int = option(
        default_workers(),
        help="data loader worker processes (0: load in the main process); default: this machine's usable CPU "
        "cores, at most 4",
        min=0,
        max=MAX_WORKERS,
    )
    classes: Literal["all", "present"] = option(
        "all", help="present: keep only classes whose images are all on disk (a partial copy of a dataset)"
    )
    image_size: int | None = option(None, help="input resolution; null: the backbone's", min=8, max=MAX_IMAGE_SIZE)
    crop_min_scale: float = option(
        0.08, help="smallest area of the training random-resized crop (CoOp's augmentation: 0.08)", min=0.01, max=1.0
    )
    on_corrupt: Literal["error", "skip"] = option(
        "error", help="a corrupt or missing image stops the run (error), or is left out and counted (skip)"
    )
    strict_shots: bool = option(
        False, help="a class with fewer training images than shots is an error (default: take them all, with a note)"
    )
    split_file: Path | None = option(  # noqa: RUF009
        None,
        help="a CoOp-format split file ({train|val|test: [[relpath, label, classname], ...]}) to use instead of "
        "the dataset's own split; paths are relative to the dataset's image folder",
    )
    split_seed: int = option(
        1, help="image-folder datasets (-d PATH): seed of the train/val/test split", min=0, max=MAX_SEED
    )
    split_val: float = option(
        0.2,
        help="image-folder datasets: fraction of each class's images for val (CoOp's DTD rule: 0.2)",
        min=0.0,
        max=0.9,
    )
    split_test: float = option(
        0.3,
        help="image-folder datasets: fraction of each class's images for test (the rest trains)",
        min=0.05,
        max=0.95,
    )
    targets: list[str] = option(  # noqa: RUF009
        [], help="xd/dg: the datasets to test on besides the source ([]: the paper's list); a missing one is skipped"
    )


@dataclass
class OptimSection:
    lr: float | None = option(None, help="base learning rate; null: the schedule set's value", min=0.0)
    epochs: int | None = option(None, help="training epochs; null: the schedule set's value", min=0, max=MAX_COUNT)
    warmup_epochs: int = option(
        1, help="epochs at warmup_lr before the cosine (Dassl's constant warm-up)", min=0, max=MAX_COUNT
    )
    warmup_lr: float = option(1e-5, help="learning rate of the warm-up epochs", min=0.0)
    momentum: float = option(0.9, help="SGD momentum", min=0.0)
    weight_decay: float = option(5e-4, help="SGD weight decay", min=0.0)


@dataclass
class RunConfig:
    """Everything a run needs. `method` is the method's own typed config (its name is ``method.name``)."""

    method: Any = None  # MethodConfig after `build_run_config`
    protocol: Protocol = option("train", help="train | b2n | xd | dg | fewshot")  # noqa: RUF009
    schedule: ScheduleSet = option(  # noqa: RUF009
        DEFAULT_SET,
        help="schedule set filling lr/epochs/batch and the method settings it fixes: "
        + "; ".join(f"{k}: {v}" for k, v in SET_HELP.items()),
    )
    seed: int = option(
        1, help="run seed (few-shot sampling, initialisation, shuffling, augmentation)", min=0, max=MAX_SEED
    )
    device: str = option("auto", help="auto | cpu | cuda | cuda:N")
    tag: str = option("", help="names a variant of a method (an ablation) so reports keep it apart")
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    out: Path = option(Path("runs"), help="folder that holds the run directories")  # noqa: RUF009
    db: str | None = option(None, help="results database (a file path); null: <out>/results.sqlite; 'none': off")
    quiet: bool = option(False, help="no progress bars (the log file is still written)")
    log_every: int = option(20, help="write a log line every this many training steps", min=1, max=MAX_COUNT)
    shift_images: int = option(
        256,
        help="training images whose per-layer feature shift a run records in metrics.shift (0: none)",
        min=0,
        max=MAX_COUNT,
    )
    imports: list[str] = option(  # noqa: RUF009
        [], help="Python modules imported before the method and dataset are looked up (--import, $RESTORE_IMPORT)"
    )
    tracking: list[TrackerName] = option(  # noqa: RUF009  (option() is dataclasses.field)
        ["tensorboard", "jsonl"],
        help="where per-step scalars go: tensorboard (<run>/tensorboard/), jsonl (<run>/scalars.jsonl), wandb, "
        "mlflow (their libraries, installed separately); [] for none",
    )

    @property
    def method_name(self) -> str:
        return self.method.name

    # --- derived values ---------------------------------------------------------------------------------
    @property
    def lr(self) -> float:
        return _required(self.optim.lr, "optim.lr")

    @property
    def epochs(self) -> int:
        return _required(self.optim.epochs, "optim.epochs")

    @property
    def batch_size(self) -> int:
        return _required(self.data.batch_size, "data.batch_size")

    def to_dict(self) -> dict[str, Any]:
        """Plain data (what config.yaml holds); the method section carries its name."""
        d = {f.name: to_dict(getattr(self, f.name)) for f in dataclasses.fields(self) if f.name != "method"}
        method = {"name": self.method.name, **to_dict(self.method)} if self.method is not None else None
        return {"method": method, **d}

    def identity(self) -> dict[str, Any]:
        """The settings that determine the result: the config without output paths and reporting switches."""
        d = self.to_dict()
        defaults = RunConfig().to_dict()
        for key in (*ADMIN_KEYS, *OPTIONAL_KEYS):
            node, default = d, defaults
            *parents, last = key.split(".")
            for p in parents:
                node, default = node.get(p, {}), default.get(p, {})
            if key in ADMIN_KEYS or node.get(last) == default.get(last):
                node.pop(last, None)
        return d

    def hash(self) -> str:
        """The run's one config hash (SHA-256 of `identity`): its database row's, the sweep's skip key."""
        return config_hash(self.identity())

    def short_hash(self) -> str:
        """The first 16 hex digits of `hash`, as run.json, metrics.json and checkpoints record it (the run
        directory's name shows 8)."""
        return self.hash()[:16]


def _required(value: Any, key: str) -> Any:
    if value is None:
        raise ConfigError(f"{key} is not set and the method has no default for it", hint=f"set it: --set {key}=...")
    return value


def build_run_config(data: dict[str, Any] | None) -> RunConfig:
    """A checked `RunConfig` from a nested mapping (YAML + flags + overrides). Not yet resolved."""
    data = dict(data or {})
    _import_recorded(data.get("imports"))
    method = data.pop("method", None)
    if method is None or method == {}:
        raise ConfigError("no method given", hint="pass --method NAME (see `restore methods`)")
    if isinstance(method, str):
        method = {"name": method}
    if isinstance(method, MethodConfig):
        method_cfg = method
    else:
        if not isinstance(method, dict):
            raise ConfigError(f"method: expected a name or a mapping with 'name', got {method!r}")
        method = dict(method)
        name = method.pop("name", None)
        if not name:
            raise ConfigError("the method section has no 'name'", hint="e.g. method: {name: maple, depth: 9}")
        method_cfg = make_config(str(name), _with_schedule(str(name), method, data))
    cfg = from_dict(RunConfig, data)
    cfg.method = method_cfg
    return cfg


def _import_recorded(modules: Any) -> None:
    """A config's ``imports:`` are imported before its method and dataset are looked up."""
    if modules is None:
        return
    if not isinstance(modules, list) or not all(isinstance(m, str) for m in modules):
        raise ConfigError(
            f"imports: expected a list of module names, got {modules!r}", hint="e.g. imports: [my_methods]"
        )
    plugins.import_modules(modules)


def _with_schedule(method: str, options: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    """The method's options with the schedule set's method settings under them (the user's win)."""
    schedule = check_set(str(data.get("schedule", DEFAULT_SET)))
    section = data.get("data") if isinstance(data.get("data"), dict) else {}
    protocol, dataset, shots = data.get("protocol", "train"), section.get("dataset", ""), section.get("shots", 16)
    settings = schedule_settings(
        method_class(method).name, schedule, str(protocol), str(dataset or ""), shots if isinstance(shots, int) else 16
    )
    fixed = {k.removeprefix("method."): v for k, v in settings.items() if k.startswith("method.")}
    return {**fixed, **options}


def load_run_config(
    path: str | Path | None = None,
    flags: dict[str, Any] | None = None,
    overrides: list[str] | tuple[str, ...] = (),
) -> RunConfig:
    """The config of a run from a YAML file (optional), flag values (dotted keys, None = not given) and
    ``--set`` overrides, applied in that order (later wins)."""
    data: dict[str, Any] = load_yaml(path) if path is not None else {}
    if isinstance(data.get("method"), str):
        data["method"] = {"name": data["method"]}
    for key, value in (flags or {}).items():
        if value is None:
            continue
        if key == "method":
            current = data.get("method") or {}
            if isinstance(current, dict) and current.get("name") not in (None, value):
                # Another method: the file's options were for the file's method.
                current = {}
            data["method"] = {**current, "name": value}
            continue
        node = data
        *parents, last = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"config key {p!r} must be a section (a mapping)")
        node[last] = value.as_posix() if isinstance(value, Path) else value
    data = apply_overrides(data, list(overrides))

    plugins.record_imports(data)  # --import / $RESTORE_IMPORT of this process: the run records them
    return build_run_config(data)


def resolve(cfg: RunConfig, *, image_size: int | None = None, device_type: str = "cpu") -> RunConfig:
    """A copy with every open value filled: lr/epochs/batch size from the schedule set (a method the sets do
    not know: 0.002 / 10 / 32), the backbone's image size, the precision for the device. Values the user set
    are kept."""
    sched = schedule_settings(cfg.method.name, cfg.schedule, cfg.protocol, cfg.data.dataset, cfg.data.shots)
    optim = dataclasses.replace(
        cfg.optim,
        lr=cfg.optim.lr if cfg.optim.lr is not None else sched.get("optim.lr", 0.002),
        epochs=cfg.optim.epochs if cfg.optim.epochs is not None else sched.get("optim.epochs", 10),
    )
    data = dataclasses.replace(
        cfg.data,
        batch_size=cfg.data.batch_size if cfg.data.batch_size is not None else sched.get("data.batch_size", 32),
        image_size=cfg.data.image_size if cfg.data.image_size is not None else image_size,
        root=cfg.data.root if cfg.data.root is not None else default_root_for(cfg.data.dataset),
        dataset=_absolute_folder(cfg.data.dataset),
        split_file=cfg.data.split_file.expanduser().resolve() if cfg.data.split_file is not None else None,
    )
    model = dataclasses.replace(cfg.model, precision=resolve_precision(cfg.model.precision, device_type))
    method = cfg.method.for_run(cfg.protocol, dataset_title(cfg.data.dataset or None))
    return dataclasses.replace(cfg, method=method, optim=optim, data=data, model=model)


def _absolute_folder(dataset: str) -> str:
    """An image folder as its absolute path (``-d my_images`` from any folder is the same run), other names
    as they are."""
    if not dataset:
        return dataset

    try:
        spec = get_dataset(dataset)
    except RestoreError:  # reported where the dataset is loaded
        return dataset
    return spec.name if spec.location is not None else dataset


def resolve_precision(precision: str, device_type: str) -> str:
    """auto -> fp32 on CPU; on CUDA bf16 where the GPU supports it, else amp. amp, bf16, fp16 need CUDA.

    (Run folders written before ``amp`` existed say ``fp16`` for what is now ``amp``; a resume of such a run
    is refused, see `restore.engine.trainer.Trainer.resume`.)"""
    if device_type != "cuda":
        if precision in ("amp", "bf16", "fp16"):
            what = "CLIP and the prompts in half precision" if precision == "fp16" else "autocast"
            raise ConfigError(
                f"model.precision={precision} needs a CUDA device ({what}); on CPU runs are fp32",
                hint="set model.precision=auto or fp32, or --device cuda",
            )
        return "fp32"
    if precision != "auto":
        return precision

    return "bf16" if torch.cuda.is_bf16_supported() else "amp"
