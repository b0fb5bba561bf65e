"""The `restore` command line: thin over the Python API. Each area contributes its own Typer sub-app."""

from __future__ import annotations

import contextlib
import enum
import functools
import importlib
import importlib.util
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from typer.core import TyperGroup

from restore.errors import ConfigError, RestoreError, RestoreWarning

F = TypeVar("F", bound=Callable[..., Any])


class _CleanGroup(TyperGroup):
    """The root command: whatever sub-command runs (the data, results and world sub-apps raise their errors
    and leave the printing to the root), a RestoreError becomes `error:`/`hint:` lines and its exit code,
    and restore's warnings print as `warning:` lines — also in-process (tests, CliRunner), not only in `main`.
    """

    def invoke(self, ctx: Any) -> Any:
        with _user_errors():
            return super().invoke(ctx)


app = typer.Typer(
    name="restore",
    help="Prompt learning for CLIP: RESTORE and the methods it is compared with.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    cls=_CleanGroup,
)


MAX_LINE = 1000  # characters of an error or hint line: a message that echoes a huge value stays readable


def _clip_lines(text: str) -> str:
    """Each line at most `MAX_LINE` characters, keeping its start and its end (where paths and causes are)."""
    half = MAX_LINE // 2 - 20
    return "\n".join(
        line if len(line) <= MAX_LINE else f"{line[:half]} ... ({len(line) - 2 * half} characters) ... {line[-half:]}"
        for line in str(text).splitlines()
    )


GENERIC_HINT = "`restore COMMAND --help` lists the options; `restore methods NAME` a method's options and ranges"


def report_error(e: RestoreError) -> None:
    typer.secho(f"error: {_clip_lines(e.message)}", fg=typer.colors.RED, err=True)
    hint = e.hint or (GENERIC_HINT if isinstance(e, ConfigError) else None)
    if hint:
        typer.echo(f"  hint: {_clip_lines(hint)}", err=True)


@contextlib.contextmanager
def _warning_lines() -> Iterator[None]:
    """While a command runs, restore's own warnings (data that loads but looks wrong) print as they happen, as
    one `warning:` line each, every time (not once per process); other warnings as Python prints them."""
    with warnings.catch_warnings():
        python_show = warnings.showwarning

        def show(message: Any, category: type[Warning], *args: Any, **kwargs: Any) -> None:
            if issubclass(category, RestoreWarning):
                typer.secho(f"warning: {_clip_lines(str(message))}", fg=typer.colors.YELLOW, err=True)
            else:
                python_show(message, category, *args, **kwargs)

        warnings.simplefilter("always", RestoreWarning)
        warnings.showwarning = show
        yield


@contextlib.contextmanager
def _user_errors() -> Iterator[None]:
    """The one way a command ends on a user's mistake: restore's warnings as `warning:` lines while it runs, a
    RestoreError as `error:`/`hint:` lines and its exit code (used by the root group and by `clean_errors`)."""
    try:
        with _warning_lines():
            yield
    except RestoreError as e:
        report_error(e)
        raise typer.Exit(e.exit_code) from None


def clean_errors(fn: F) -> F:
    """A user's mistake (a RestoreError) becomes one message and a non-zero exit, never a traceback —
    also when the command runs inside another program (tests, CliRunner) rather than through `main`."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with _user_errors():
                return fn(*args, **kwargs)
        except KeyboardInterrupt:
            typer.secho("interrupted; continue the run with --resume", fg=typer.colors.YELLOW, err=True)
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


# --- shell completion of names --------------------------------------------------------------------------
def _complete(names: list[str], incomplete: str) -> list[str]:
    return [n for n in names if n.lower().startswith(incomplete.lower())]


def complete_method(incomplete: str) -> list[str]:
    # slow: a command's room (torch, the engine) loads when the command runs; `restore --help` stays fast
    from restore.methods import method_names

    return _complete(method_names(), incomplete)


def complete_dataset(incomplete: str) -> list[str]:
    # slow: a command's room (torch, the engine) loads when the command runs; `restore --help` stays fast
    from restore.data import list_datasets

    return _complete(list_datasets(), incomplete)


def complete_backbone(incomplete: str) -> list[str]:
    # slow: a command's room (torch, the engine) loads when the command runs; `restore --help` stays fast
    from restore.clip.architectures import ARCHITECTURES

    return _complete([*ARCHITECTURES, *(f"random:{a}" for a in ARCHITECTURES), "world"], incomplete)


# --- options shared by train and run ---------------------------------------------------------------------
ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML run config (flags and --set win).")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="Override any config key, e.g. --set optim.lr=0.002 (repeatable).", metavar="K=V"),
]
DatasetOpt = Annotated[
    str | None,
    typer.Option(
        "--dataset",
        "-d",
        help="Dataset (`restore data list`), or the path of an image folder (<folder>/<class name>/<image>).",
        autocompletion=complete_dataset,
    ),
]
SplitFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--split-file",
        help="A CoOp-format split file to use instead of the dataset's split (data.split_file); its paths are "
        "relative to the dataset's image folder.",
    ),
]
TargetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--target",
        help="xd/dg: a dataset to test on besides the source (repeatable; default: the paper's list). A target "
        "whose data is missing is skipped and listed.",
        autocompletion=complete_dataset,
    ),
]
RootOpt = Annotated[
    Path | None, typer.Option("--root", "-r", help="Folder holding the dataset folders (default $RESTORE_DATA).")
]
BackboneOpt = Annotated[
    str | None,
    typer.Option(
        "--backbone", "-b", help="ViT-B/16, a weights file, random:tiny, world.", autocompletion=complete_backbone
    ),
]
OutOpt = Annotated[Path | None, typer.Option("--out", "-o", help="Folder of run directories (default runs).")]
DbOpt = Annotated[
    str | None, typer.Option("--db", help="Results database file (default <out>/results.sqlite; 'none' for no record).")
]
DeviceOpt = Annotated[str | None, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars (the run still writes its log).")]
EpochsOpt = Annotated[int | None, typer.Option("--epochs", help="Training epochs (default: the schedule set's).")]
LrOpt = Annotated[float | None, typer.Option("--lr", help="Learning rate (default: the schedule set's).")]
BatchOpt = Annotated[int | None, typer.Option("--batch-size", help="Training batch size (default: the schedule's).")]
WorkersOpt = Annotated[int | None, typer.Option("--workers", help="Data-loader worker processes.")]
PrecisionOpt = Annotated[
    str | None, typer.Option("--precision", help="auto, fp32, amp, bf16 or fp16 (see docs/precision.md).")
]
ScheduleOpt = Annotated[
    str | None,
    typer.Option(
        "--schedule",
        help="Schedule set for lr/epochs/batch and the method settings it fixes: own (each method's release, "
        "the default) or restore_paper (the RESTORE paper's re-runs). See `restore methods NAME`.",
    ),
]
TagOpt = Annotated[str | None, typer.Option("--tag", help="Name a variant (ablation) so reports keep it apart.")]
ResumeOpt = Annotated[
    bool, typer.Option("--resume", help="Continue the run from its last epoch checkpoint (or re-report it if done).")
]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Delete an existing run directory and start again.")]


class ProtocolName(enum.StrEnum):
    b2n = "b2n"
    xd = "xd"
    dg = "dg"
    fewshot = "fewshot"


def _flags(**values: Any) -> dict[str, Any]:
    # slow: a command's room (torch, the engine) loads when the command runs; `restore --help` stays fast
    from restore.api import FLAG_KEYS

    return {FLAG_KEYS[k]: v for k, v in values.items() if v is not None}


def _print_result(result: Any) -> None:
    typer.echo(f"{result.run_dir}: {result.summary()}")


# --- commands -------------------------------------------------------------------------------------------
@app.command()
def version() -> None:
    """Print the installed version."""
    # slow: a command's room (torch, the engine) loads when the command runs; `restore --help` stays fast
    from restore import __version__

    typer.echo(__version__)


@app.command()
@clean_errors
def train(
    method: Annotated[
        str | None, typer.Option("--method", "-m", help="Method (`restore methods`).", autocompletion=complete_method)
    ] = None,
    dataset: DatasetOpt = None,
    root: RootOpt = None,
    split_file: SplitFileOpt = None,
    shots: Annotated[
        int | None, typer.Option("--shots", help="Training images per class (-1 or 0: all of them).")
    ] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Run seed.")] = None,
    backbone: BackboneOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    epochs: EpochsOpt = None,
    lr: LrOpt = None,
    batch_size: BatchOpt = None,
    workers: WorkersOpt = None,
    precision: PrecisionOpt = None,
    out: OutOpt = None,
    db: DbOpt = None,
    device: DeviceOpt = None,
    schedule: ScheduleOpt = None,
    tag: TagOpt = None,
    quiet: QuietOpt = False,
    resume: ResumeOpt = False,
    overwrite: OverwriteOpt = False,
    run_dir: Annotated[
        Path | None, typer.Option("--run-dir", help="Use this run directory instead of the derived name.")
    ] = None,
) -> None:
    """Train a method on a dataset's few-shot training set (all classes) and test it on the test split."""
    # slow: a command's room (torch, the engine) loads when the command runs; `restore --help` stays fast
    from restore.engine.run_config import load_run_config
    from restore.engine.runs import run as run_config

    flags = _flags(
        method=method, dataset=dataset, root=root, shots=shots, seed=seed, backbone=backbone, epochs=epochs, lr=lr,
        batch_size=batch_size, workers=workers, precision=precision, out=out, db=db, device=device, tag=tag,
        schedule=schedule, quiet=quiet or None, split_file=split_file,
    )  # fmt: skip
    flags["protocol"] = "train"
    cfg = load_run_config(config, flags, set_ or [])
    _print_result(run_config(cfg, resume=resume, overwrite=overwrite, run_dir=run_dir))


@app.command("run")
@clean_errors
def run_protocol(
    protocol: Annotated[ProtocolName, typer.Argument(help="b2n (base-to-novel), xd, dg or fewshot.")],
    method: Annotated[
        list[str] | None,
        typer.Option("--method", "-m", help="Method(s) (repeatable).", autocompletion=complete_method),
    ] = None,
    dataset: DatasetOpt = None,
    root: RootOpt = None,
    split_file: SplitFileOpt = None,
    target: TargetOpt = None,
    shots: Annotated[
        list[int] | None, typer.Option("--shots", help="Shots per class (repeatable; -1 or 0: all images).")
    ] = None,
    seed: Annotated[list[int] | None, typer.Option("--seed", help="Seed(s) (repeatable; papers: 1 2 3).")] = None,
    backbone: BackboneOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    epochs: EpochsOpt = None,
    lr: LrOpt = None,
    batch_size: BatchOpt = None,
    workers: WorkersOpt = None,
    precision: PrecisionOpt = None,
    out: OutOpt = None,
    db: DbOpt = None,
    device: DeviceOpt = None,
    schedule: ScheduleOpt = None,
    tag: TagOpt = None,
    quiet: QuietOpt = False,
    resume: ResumeOpt = False,
    overwrite: OverwriteOpt = False,
) -> None:
    """Run a whole protocol: train, evaluate every split it needs, record metrics and a database row per run.

    Repeated --method/--seed/--shots run every combination, one after the other; all their configs are
    checked before the first run starts.
    """
    # slow: a command's room (torch, the engine) loads when the command runs; `restore --help` stays fast
    from restore.engine.run_config import load_run_config

    base = _flags(
        dataset=dataset, root=root, backbone=backbone, epochs=epochs, lr=lr, batch_size=batch_size, workers=workers,
        precision=precision, out=out, db=db, device=device, tag=tag, schedule=schedule, quiet=quiet or None,
        split_file=split_file, targets=_targets(protocol.value, target),
    )  # fmt: skip
    base["protocol"] = protocol.value
    configs = [
        load_run_config(
            config,
            {**base, **_flags(method=m, shots=n, seed=s)},
            set_ or [],
        )
        for m in (method or [None])
        for n in (shots or [None])
        for s in (seed or [None])
    ]
    results = _execute_configs(configs, resume=resume, overwrite=overwrite)
    if len(results) > 1:
        _summary_table(results)


def _targets(protocol: str, targets: list[str] | None) -> list[str] | None:
    """--target is for the transfer protocols (xd, dg): elsewhere it would be silently ignored."""
    if targets and protocol not in ("xd", "dg"):
        raise ConfigError(
            f"--target applies to xd and dg, not {protocol}", hint="drop --target, or run xd / dg with a source -d"
        )
    return targets or None


def _execute_configs(configs: list[Any], *, resume: bool, overwrite: bool) -> list[Any]:
    """Each config's run, one after the other. A model that does not train (zero-shot) is evaluated once for
    runs that differ only in shots, and its metrics recorded for each of them (`same_model_key`)."""
    # slow: a command's room (torch, the engine) loads when the command runs; `restore --help` stays fast
    from restore.engine.plan import plan_run, same_model_key
    from restore.engine.runs import execute

    evaluated: dict[str, Any] = {}
    results = []
    for cfg in configs:
        plan = plan_run(cfg)
        key = same_model_key(plan)
        first = evaluated.get(key) if key is not None else None
        if first is not None:
            shots = "all" if first.config.data.shots <= 0 else first.config.data.shots
            plan.reuse_metrics, plan.reused_from = first.metrics, f"the shots-{shots} run {first.run_dir}"
        result = execute(plan, resume=resume, overwrite=overwrite)
        _print_result(result)
        if first is not None:
            typer.echo(f"  {cfg.method_name}: the same model as the shots-{shots} run, evaluated once; its metrics are "
                       f"recorded for shots {cfg.data.shots} too")  # fmt: skip
        elif key is not None:
            evaluated[key] = result
        results.append(result)
    return results


def _summary_table(results: list[Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    splits: list[str] = []
    for r in results:
        splits += [k for k, v in r.metrics.items() if isinstance(v, dict) and "top1" in v and k not in splits]
    t = Table(title=f"{len(results)} runs")
    for col in ("method", "shots", "seed", *splits, *(["HM"] if any("hm" in r.metrics for r in results) else [])):
        t.add_column(col)
    for r in results:
        row = [f"{r.config.method_name} ({r.config.schedule})", str(r.config.data.shots), str(r.config.seed)]
        row += [f"{r.metrics[s]['top1']:.2f}" if s in r.metrics else "" for s in splits]
        if "hm" in r.metrics:
            row.append(f"{r.metrics['hm']:.2f}")
        t.add_row(*row)
    Console().print(t)


def _metrics_table(metrics: dict[str, Any], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title)
    for col in ("split", "top-1", "top-5", "images"):
        t.add_column(col)
    for k, v in metrics.items():
        if isinstance(v, dict):
            t.add_row(k, f"{v['top1']:.2f}", f"{v['top5']:.2f}", str(v["n"]))
    if "hm" in metrics:
        t.add_row("HM", f"{metrics['hm']:.2f}", "", "")
    Console().print(t)


def _write_json(path: Path | None, data: dict[str, Any]) -> None:
    if path is not None:
        # slow: a command's room (torch, the engine) loads when the command runs; `restore --help` stays fast
        from restore.errors import DataError
        from restore.fileio import atomic_write_json

        try:
            atomic_write_json(path, data)
        except OSError as e:  # a folder, or a place that cannot be written
            raise DataError(
                f"cannot write --json {path}: {e.strerror or e}", hint="pass a file path you can write"
            ) from None
        typer.echo(f"wrote {path}")


@app.command("eval")
@clean_errors
def eval_cmd(
    checkpoint: Annotated[Path, typer.Option("--checkpoint", "-k", help="A run directory or its model.safetensors.")],
    dataset: Annotated[
        str | None,
        typer.Option(
            "--dataset", "-d", help="Dataset to test on (default: the run's own).", autocompletion=complete_dataset
        ),
    ] = None,
    root: RootOpt = None,
    protocol: Annotated[
        str, typer.Option("--protocol", "-p", help="train (whole test split), b2n (base and novel), xd, dg, fewshot.")
    ] = "train",
    backbone: Annotated[
        str | None, typer.Option("--backbone", "-b", help="Default: the run's.", autocompletion=complete_backbone)
    ] = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")] = "auto",
    precision: Annotated[str, typer.Option("--precision", help="auto, fp32, amp, bf16 or fp16.")] = "auto",
    batch_size: Annotated[int, typer.Option("--batch-size", help="Evaluation batch size.")] = 100,
    workers: Annotated[int, typer.Option("--workers", help="Data-loader worker processes.")] = 0,
    classes: Annotated[str, typer.Option("--classes", help="all, or present (only classes on disk).")] = "all",
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the metrics to this JSON file.")] = None,
    quiet: QuietOpt = False,
) -> None:
    # slow: a command's room (torch, the engine) loads when the command runs; `restore --help` stays fast
    """Test a trained method (a run's checkpoint) on a dataset's test split(s); by default the run's own dataset,
    from the run's own data root."""
    from restore.engine.standalone_eval import evaluate_checkpoint, trained_on

    if dataset is None:
        dataset, run_root = trained_on(checkpoint)
        root = root or run_root
    metrics = evaluate_checkpoint(
        checkpoint, dataset=dataset, root=_root(root, dataset), protocol=protocol, backbone=backbone, device=device,
        precision=precision, batch_size=batch_size, workers=workers, classes=classes, progress=False if quiet else None,
    )  # fmt: skip
    _metrics_table(metrics, f"{checkpoint} on {dataset}")
    _write_json(json_out, metrics)


@app.command()
@clean_errors
def analyze(
    runs: Annotated[list[Path], typer.Argument(help="Run directories of finished runs (several methods/seeds).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Where the JSON and the PNG figures go.")] = Path("analysis"),
    root: Annotated[Path | None, typer.Option("--root", help="Data root, if not the one the runs used.")] = None,
    split: Annotated[
        str, typer.Option("--split", help="train (the images the run recorded its profile on) or a test split.")
    ] = "train",
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")] = "cpu",
    tsne_images: Annotated[int, typer.Option("--tsne-images", help="Test images per split in the t-SNE.")] = 200,
    no_tsne: Annotated[bool, typer.Option("--no-tsne", help="Skip the t-SNE figure.")] = False,
    no_zero_shot: Annotated[
        bool, typer.Option("--no-zero-shot", help="Do not evaluate zero-shot CLIP for the gains.")
    ] = False,
    words: Annotated[
        int | None,
        typer.Option(
            "--words",
            help="Instead: the K vocabulary words nearest to each learned text context vector (CoOp's "
            "interpret_prompt), printed and written to <out>/words.json.",
            metavar="K",
        ),
    ] = None,
) -> None:
    """Feature-shift diagnostics: per-layer shifts (JSON) and the paper's Fig. 3, 4a and 5 as PNG files; or,
    with --words K, the nearest vocabulary words of each learned context vector."""
    # slow: a command's room (torch, the engine) loads when the command runs; `restore --help` stays fast
    from restore.engine.analyze_runs import analyze_runs, summary_lines
    from restore.errors import ConfigError, DataError

    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file", hint="pass a folder for the analysis JSON and the figures")
    if words is not None:
        try:
            _analyze_words(runs, words, out, device)
        except OSError as e:  # an --out that cannot be written
            raise DataError(
                f"{e.filename or out}: {e.strerror or e}", hint="pass --out a folder you can write to"
            ) from None
        return
    try:
        result = analyze_runs(
            runs, out, root=root, split=split, device=device, tsne_images=tsne_images, tsne=not no_tsne,
            zero_shot=not no_zero_shot,
        )  # fmt: skip
    except OSError as e:  # an --out that cannot be created or written (a read-only place), a run file unreadable
        raise DataError(
            f"{e.filename or out}: {e.strerror or e}", hint="pass --out a folder you can write to, and readable runs"
        ) from None
    for line in summary_lines(result):
        typer.echo(line)
    typer.echo(f"wrote {Path(out) / 'analysis.json'}")
    for name, path in result["figures"].items():
        typer.echo(f"  {name}: {path}")


# --- restore predict: a trained run on the user's own images (restore.engine.predict) ---------------------
@app.command()
@clean_errors
def predict(
    run_dir: Annotated[Path, typer.Argument(help="A finished run's folder (the one holding model.safetensors).")],
    images: Annotated[list[Path], typer.Argument(help="Image files, or folders searched for image files.")],
    classes: Annotated[
        str | None, typer.Option("--classes", help="Class names, comma-separated (default: every class of the run).")
    ] = None,
    classes_file: Annotated[
        Path | None, typer.Option("--classes-file", help="Class names, one a line (instead of --classes).")
    ] = None,
    top: Annotated[int, typer.Option("--top", help="Classes shown per image.", min=1, max=1000)] = 5,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the predictions to a JSON file.")] = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")] = "auto",
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per step.", min=1, max=4096)] = 32,
) -> None:
    """Classify images with a trained run: its model, its test preprocessing, and by default every class of its
    dataset (after base-to-novel: base and novel); any other class names with --classes."""
    from rich.console import Console
    from rich.table import Table

    # slow: a command's room (torch, the engine) loads when the command runs; `restore --help` stays fast
    from restore.api import load_run
    from restore.engine.predict import image_files, parse_classes

    if json_out is not None and json_out.is_dir():
        raise ConfigError(f"--json {json_out} is a folder", hint="pass the path of the JSON file to write")
    names = parse_classes(classes, classes_file)
    files = image_files(images)  # a wrong path fails before the model loads
    loaded = load_run(run_dir, device=device, classes=names)
    result = loaded.predict(files, batch_size=batch_size)
    console = Console()
    k = min(top, len(result.classnames))
    origin = "given" if names is not None else "the run's"
    console.print(
        f"{loaded.config.method_name} run {run_dir}: {len(result.sources)} image(s), {len(result.classnames)} "
        f"classes ({origin}), top {k}",
        highlight=False, soft_wrap=True,
    )  # fmt: skip
    for source, row in zip(result.sources, result.top(k), strict=True):
        t = Table(title=source, title_justify="left")
        for col, justify in (("#", "right"), ("class", "left"), ("probability", "right")):
            t.add_column(col, justify=justify, overflow="fold")  # type: ignore[arg-type]
        for rank, (name, p) in enumerate(row, 1):
            t.add_row(str(rank), name, f"{100 * p:.2f}%")
        console.print(t)
    _write_json(json_out, {"run": str(run_dir), "classes": result.classnames, "predictions": result.to_json(k)})


def _analyze_words(runs: list[Path], k: int, out: Path, device: str) -> None:
    """`restore analyze --words K`: a table per run of each learned context vector's nearest words."""
    from rich.console import Console
    from rich.table import Table

    # slow: a command's room (torch, the engine) loads when the command runs; `restore --help` stays fast
    from restore.analysis.words import nearest_words
    from restore.engine.backbone import load_backbone
    from restore.engine.device import resolve_device
    from restore.engine.run_dir import MODEL_FILE, read_run_config
    from restore.errors import CheckpointError
    from restore.fileio import atomic_write_json
    from restore.methods.model_file import load_method

    console = Console()
    Path(out).mkdir(parents=True, exist_ok=True)  # an --out that cannot be made fails before any work
    result = []
    for run in runs:
        config = read_run_config(run)
        if not (run / MODEL_FILE).is_file():
            raise CheckpointError(f"{run} holds no trained model ({MODEL_FILE})", hint="pass a finished run's folder")
        clip = load_backbone(config.model.backbone, resolve_device(device))
        found = nearest_words(load_method(run / MODEL_FILE, clip, expect_method=config.method_name), k)
        t = Table(title=f"{config.method_name}: {run}", title_justify="left")
        t.add_column("context")
        t.add_column(f"nearest {k} words (Euclidean distance)", overflow="fold")
        for c in found:
            t.add_row(c.position, ", ".join(f"{w!r} {d:.3f}" for w, d in c.words))
        console.print(t)
        result.append({"run": str(run), "method": config.method_name, "contexts": [c.to_dict() for c in found]})
    path = atomic_write_json(Path(out) / "words.json", result)
    typer.echo(f"wrote {path}")


def _root(root: Path | None, dataset: str | None = None) -> Path:
    """--root, else the dataset's own home (a world task, as `restore run` does), else $RESTORE_DATA."""
    # slow: a command's room (torch, the engine) loads when the command runs; `restore --help` stays fast
    from restore.data.registry import data_root

    return data_root(dataset, root)


@app.command()
@clean_errors
def zeroshot(
    backbone: Annotated[
        str, typer.Option("--backbone", "-b", help="CLIP weights (a name, a file, random:tiny, world).")
    ],
    dataset: Annotated[
        str | None, typer.Option("--dataset", "-d", help="A registered dataset.", autocompletion=complete_dataset)
    ] = None,
    root: RootOpt = None,
    images: Annotated[
        Path | None, typer.Option("--images", help="Or an image folder laid out as <folder>/<class>/*.jpg.")
    ] = None,
    templates: Annotated[
        str, typer.Option("--templates", help="single (CoOp's per-dataset), ensemble (CLIP's), or a template with {}.")
    ] = "single",
    protocol: Annotated[str, typer.Option("--protocol", "-p", help="train (all classes), b2n, xd, dg.")] = "train",
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")] = "auto",
    precision: Annotated[str, typer.Option("--precision", help="auto, fp32, amp, bf16 or fp16.")] = "auto",
    batch_size: Annotated[int, typer.Option("--batch-size", help="Evaluation batch size.")] = 100,
    workers: Annotated[int, typer.Option("--workers", help="Data-loader worker processes.")] = 0,
    classes: Annotated[
        str, typer.Option("--classes", help="all, or present (only the dataset's classes with images on disk).")
    ] = "all",
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the metrics to this JSON file.")] = None,
    quiet: QuietOpt = False,
) -> None:
    """Zero-shot CLIP accuracy on a dataset or an image folder (no training)."""
    # slow: a command's room (torch, the engine) loads when the command runs; `restore --help` stays fast
    from restore.engine.standalone_eval import zeroshot_eval

    metrics = zeroshot_eval(
        backbone=backbone, dataset=dataset, root=_root(root, dataset) if dataset is not None else None, images=images,
        templates=templates, protocol=protocol, device=device, precision=precision, batch_size=batch_size,
        workers=workers, classes=classes, progress=False if quiet else None,
    )  # fmt: skip
    _metrics_table(metrics, f"zero-shot {backbone} on {dataset or images}")
    _write_json(json_out, metrics)


@app.command()
@clean_errors
def methods(
    name: Annotated[
        str | None, typer.Argument(help="Show this method's options.", autocompletion=complete_method)
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """The methods: name, summary, the schedule of each set, and their options with defaults."""
    import json

    from rich.console import Console
    from rich.table import Table

    # slow: a command's room (torch, the engine) loads when the command runs; `restore --help` stays fast
    from restore.methods import method_class, method_table

    rows = method_table()
    if name is not None:
        wanted = method_class(name).name
        rows = [r for r in rows if r["name"] == wanted]
    if as_json:
        out = [{**r, "fields": [dict(zip(("name", "type", "default", "help"), f, strict=True)) for f in r["fields"]]}
               for r in rows]  # fmt: skip
        typer.echo(json.dumps(out, indent=2, default=str))
        return
    console = Console()
    if console.width < WIDE_TABLE:
        _methods_narrow(console, rows, single=name is not None)
        return
    if name is None:
        t = Table(title="methods (restore methods NAME for each schedule set and every option's help)")
        for col in ("name", "summary", "b2n lr / epochs / batch: own | restore_paper", "options (defaults)"):
            t.add_column(col, overflow="fold")
        for r in rows:
            options = ", ".join(f"{f[0]}={f[2]!r}" for f in r["fields"])
            t.add_row(r["name"], r["summary"], _b2n_schedules(r["schedules"]), options)
        console.print(t)
        return
    r = rows[0]
    console.print(f"[bold]{r['name']}[/]: {r['summary']}")
    _schedule_table(console, r["schedules"])
    t = Table()
    for col in ("option", "type", "default", "help"):
        t.add_column(col, overflow="fold")
    for f_name, f_type, f_default, f_help in r["fields"]:
        t.add_row(f"method.{f_name}", f_type, repr(f_default), f_help)
    console.print(t)


WIDE_TABLE = 120  # columns below which `restore methods` prints blocks: a 4-column table would cut words


def _methods_narrow(console: Any, rows: list[dict[str, Any]], *, single: bool) -> None:
    """`restore methods` on a narrow terminal: a block per method (and per option), wrapped between words,
    so that values such as `checkpoint_text=False` are never split."""
    from rich.text import Text

    def say(text: str, indent: int = 0, style: str = "") -> None:
        wrapped = Text(text, style=style).wrap(console, max(console.width - indent, 20))
        for line in wrapped:
            console.print(" " * indent + line.plain, style=style, highlight=False, crop=False, soft_wrap=True)

    if not single:
        say("methods (restore methods NAME for each schedule set and every option's help)", style="italic")
    for r in rows:
        console.print()
        say(f"{r['name']}: {r['summary']}", style="bold")
        sets = {s["set"]: s for s in r["schedules"] if s["protocol"] == "b2n"}
        say("b2n lr / epochs / batch: " + ("; ".join(
            f"{k} {s['lr']} / {s['epochs']} / {s['batch_size']}" for k, s in sets.items()) or "-"), 2)  # fmt: skip
        if not single:
            say("options (defaults): " + ", ".join(f"{f[0]}={f[2]!r}" for f in r["fields"]), 2)
            continue
        say("schedule sets (--schedule; dg reads xd's row; train/fewshot read fewshot's, else b2n's):", 2)
        for sc in r["schedules"]:
            epochs = f"{sc['epochs']} ({sc['epochs_rule']})" if sc["epochs_rule"] else str(sc["epochs"])
            options = "".join(f", {k}={v!r}" for k, v in sc["options"].items())
            say(f"{sc['set']} {sc['protocol']}: lr {sc['lr']}, epochs {epochs}, batch {sc['batch_size']}{options}", 4)
            say(f"source: {sc['source']}" + (f" ({sc['note']})" if sc["note"] else ""), 6)
        for f_name, f_type, f_default, f_help in r["fields"]:
            say(f"method.{f_name} ({f_type}, default {f_default!r})", 2, style="bold")
            say(str(f_help), 4)


def _b2n_schedules(schedules: list[dict[str, Any]]) -> str:
    b2n = {s["set"]: s for s in schedules if s["protocol"] == "b2n"}
    return " | ".join(f"{s['lr']} / {s['epochs']} / {s['batch_size']}" for s in b2n.values()) or "-"


def _schedule_table(console: Any, schedules: list[dict[str, Any]]) -> None:
    """Each schedule set's values per protocol and the file they come from (`--schedule`, `schedule:`)."""
    from rich.table import Table

    if not schedules:
        console.print("schedule sets: none (lr 0.002, 10 epochs, batch 32 unless set)")
        return
    t = Table(title="schedule sets (--schedule; dg reads xd's row; train/fewshot read fewshot's, else b2n's)")
    for col in ("set", "protocol", "lr", "epochs", "batch", "method settings", "source"):
        t.add_column(col, overflow="fold")
    for s in schedules:
        options = ", ".join(f"{k}={v!r}" for k, v in s["options"].items())
        source = s["source"] + (f" ({s['note']})" if s["note"] else "")
        epochs = f"{s['epochs']} ({s['epochs_rule']})" if s["epochs_rule"] else str(s["epochs"])
        t.add_row(s["set"], s["protocol"], str(s["lr"]), epochs, str(s["batch_size"]), options, source)
    console.print(t)


@app.command()
@clean_errors
def sweep(
    grid: Annotated[Path, typer.Argument(help="Grid file (YAML): methods, datasets, seeds, shots, overrides.")],
    ray_address: Annotated[
        str | None,
        typer.Option("--ray-address", help="Run on Ray: auto, host:port of the head, or local (a new instance)."),
    ] = None,
    retries: Annotated[int, typer.Option("--retries", help="Try a failed run this many more times.", min=0)] = 0,
    workers: Annotated[
        int | None, typer.Option("--workers", help="Runs at once (CPU: cores split between them; GPU: <= GPUs).")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List the runs and which are done; start none.")] = False,
    db: Annotated[str | None, typer.Option("--db", help="Results database (default <out>/results.sqlite).")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Folder of run directories (default runs).")] = None,
    root: Annotated[
        Path | None,
        typer.Option("--root", "-r", help="Data root of every cell whose grid names none (default $RESTORE_DATA)."),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set", "-s", help="Override a config key in every cell, over the grid file (repeatable).", metavar="K=V"
        ),
    ] = None,
) -> None:
    """Run a grid of runs (local processes or a Ray cluster), skipping those the database holds finished.

    Failed runs are recorded with their error (and retried with --retries) without stopping the others; after
    3 runs failed with the same error no new cell starts. The exit code is 1 when a run failed. Stop it any
    time: the same command continues where it stopped.
    """
    # slow: a command's room (torch, the engine) loads when the command runs; `restore --help` stays fast
    from restore.data.registry import default_data_root
    from restore.scale.sweep import run_sweep

    try:
        result = run_sweep(
            grid, ray_address=ray_address, retries=retries, workers=workers, dry_run=dry_run, db=db, out=out,
            root=root if root is not None else default_data_root(), overrides=set_ or [],
        )  # fmt: skip
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    if result.failed:
        raise typer.Exit(1)


@app.command()
@clean_errors
def quickstart(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder of the run directories and the report.")] = Path(
        "runs/quickstart"
    ),
    workers: Annotated[
        int | None, typer.Option("--workers", help="Runs at once (default: one per CPU core).", min=1)
    ] = None,
) -> None:
    """The main job: base-to-novel on the SYNTHETIC world tasks, then the report.

    Zero-shot CLIP, CoOp, MaPLe and RESTORE_m, 3 seeds, with the shipped world CLIP: minutes on a laptop CPU.
    Run it again to see the report without rerunning anything; an interrupted one continues.
    """
    # slow: a command's room (torch, the engine) loads when the command runs; `restore --help` stays fast
    from restore.world.quickstart import run_quickstart

    try:
        result, _ = run_quickstart(out, workers=workers)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    if result.failed:
        raise typer.Exit(1)


# --- restore diff: two run folders side by side (restore.results.diff) -------------------------------------
@app.command("diff")
@clean_errors
def diff(
    run_a: Annotated[Path, typer.Argument(help="A run folder (the one holding config.yaml).")],
    run_b: Annotated[Path, typer.Argument(help="The run folder to compare it with.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the differences as JSON.")] = False,
) -> None:
    """What differs between two runs: config keys, top-1 per split and HM, and the per-layer feature shift."""
    import json

    from rich.console import Console

    # slow: a command's room (torch, the engine) loads when the command runs; `restore --help` stays fast
    from restore.results.diff import diff_runs, render

    result = diff_runs(run_a, run_b)
    if as_json:
        typer.echo(json.dumps(result.to_json(), indent=2))
    else:
        Console().print(*render(result))


def _print_version(value: bool) -> None:
    if value:
        # slow: a command's room (torch, the engine) loads when the command runs; `restore --help` stays fast
        from restore import __version__

        typer.echo(f"restore {__version__}")
        raise typer.Exit()


@app.callback()
def _root_callback(
    version: Annotated[
        bool,
        typer.Option("--version", help="Print the installed version and exit.", callback=_print_version, is_eager=True),
    ] = False,
    imports: Annotated[
        list[str] | None,
        typer.Option(
            "--import",
            help="Import this Python module first (repeatable; also $RESTORE_IMPORT, comma-separated): it registers "
            "your own methods or datasets. Runs record it in config.yaml, so later commands import it again.",
            metavar="MODULE",
        ),
    ] = None,
) -> None:
    """Prompt learning for CLIP: RESTORE and the methods it is compared with."""
    _import_user_modules(imports or [])


def _import_user_modules(modules: list[str]) -> None:
    """--import and $RESTORE_IMPORT: the user's modules, imported before the command looks anything up."""
    # slow: a command's room (torch, the engine) loads when the command runs; `restore --help` stays fast
    from restore import plugins

    plugins.import_from_env()
    plugins.import_modules(modules)


# --- sub-apps of other areas, mounted when this installation has them -----------------------------------
def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def _mount() -> None:
    if _has("restore.data.dataset_commands"):
        app.add_typer(importlib.import_module("restore.data.dataset_commands").app, name="data")
    if _has("restore.results.results_commands"):
        results = importlib.import_module("restore.results.results_commands")
        app.add_typer(results.app, name="results")
        app.command("report")(results.report)
    _mount_extensions()


def _mount_extensions() -> None:
    """Commands of extensions (the synthetic world's, installed ones' `restore.commands` entry points)."""
    # slow: a command's room (torch, the engine) loads when the command runs; `restore --help` stays fast
    from restore import plugins

    with warnings.catch_warnings():
        warnings.simplefilter("default", RestoreWarning)
        for name, sub_app in plugins.commands().items():
            app.add_typer(sub_app, name=name)


_mount()


def main(argv: list[str] | None = None) -> int:
    """Entry point: a `RestoreError` becomes one clear message and a non-zero exit, never a traceback."""
    try:
        app(args=argv, prog_name="restore")
    except RestoreError as e:
        report_error(e)
        return e.exit_code
    except KeyboardInterrupt:
        typer.secho("interrupted", fg=typer.colors.YELLOW, err=True)
        return 130
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
