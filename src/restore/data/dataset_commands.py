"""`restore data ...`: list, verify, download, info and fewshot. Thin over restore.data's Python API.

Errors a user can cause are raised as RestoreError and printed by the root command; problems found by
`verify` (missing or corrupt files) and an unfinished `download` (manual step left) exit with status 1.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from restore.data.fewshot import few_shot
from restore.data.load import load_dataset
from restore.data.protocols import base_to_novel
from restore.data.registry import data_root, get_dataset, list_datasets
from restore.data.verify import verify_dataset
from restore.errors import ConfigError, DataError, RestoreError
from restore.fileio import atomic_write_text
from restore.options import short

app = typer.Typer(
    name="data",
    help="Datasets: list the registry, verify a dataset on disk, download it, inspect few-shot splits.",
    no_args_is_help=True,
)

# Like `restore run`, the data commands read $RESTORE_DATA when --root is not given; a dataset with its own
# home (an image folder given by its path, a generated world task) needs neither.
RootOpt = Annotated[
    Path | None,
    typer.Option(
        "--root",
        "-r",
        envvar="RESTORE_DATA",
        help="folder holding the dataset folders (CoOp's $DATA; default $RESTORE_DATA)",
    ),
]


ClassesOpt = Annotated[
    str, typer.Option("--classes", help="'all', or 'present' to keep only the classes with images on disk")
]
SplitOpt = Annotated[
    Path | None, typer.Option("--split-file", help="read the split file from here instead of its standard place")
]


def _console(stderr: bool = False):
    from rich.console import Console  # slow: rich is not loaded for `restore --help`

    return Console(file=sys.stderr if stderr else sys.stdout, highlight=False, soft_wrap=True)


def _classes(value: str) -> str:
    if value not in ("all", "present"):
        raise ConfigError(f"--classes must be 'all' or 'present', got {value!r}")
    return value


def _table(header: list[str], rows: list[list[str]]) -> str:
    """Plain aligned columns: readable in a terminal, and greppable when piped or captured."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


@app.command("list")
def list_cmd(root: Annotated[Path | None, typer.Option("--root", "-r", help="also show what is on disk")] = None):
    """The registered datasets, their folders, and whether `download` can fetch them without a manual step."""
    rows = []
    for name in list_datasets():
        spec = get_dataset(name)
        how = "automatic" if spec.downloadable else ("manual step" if spec.manual else "by hand")
        if spec.manual and spec.resources:
            how += " (+ files)"
        row = [spec.name, spec.title, spec.folder, how]
        if root:
            row.append("yes" if (Path(root).expanduser() / spec.folder).is_dir() else "-")
        rows.append([*row, spec.description])
    header = ["dataset", "CoOp name", "folder", "download", *(["on disk"] if root else []), "about"]
    typer.echo(_table(header, rows))


@app.command()
def verify(
    dataset: Annotated[str, typer.Argument(help="dataset name, e.g. dtd or DescribableTextures")],
    root: RootOpt = None,
    classes: ClassesOpt = "all",
    split_file: SplitOpt = None,
    workers: Annotated[int, typer.Option(help="threads decoding images")] = 4,
    decode: Annotated[bool, typer.Option(help="decode every image (--no-decode: only check files exist)")] = True,
    per_class: Annotated[bool, typer.Option("--per-class", help="print the count of every class")] = False,
    show: Annotated[int, typer.Option(help="how many bad files to list")] = 50,
) -> None:
    """Check that every image the split lists exists and decodes; report bad files and class counts."""
    from rich.progress import (  # slow: rich is not loaded for `restore --help`
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    progress = Progress(
        TextColumn("decoding"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=_console(True)
    )
    task = progress.add_task("decode", total=None)
    with progress:
        report = verify_dataset(
            dataset,
            data_root(dataset, root),
            split_file=split_file,
            classes=_classes(classes),  # type: ignore[arg-type]
            workers=workers,
            decode=decode,
            progress=lambda n: progress.advance(task, n),
            on_total=lambda n: progress.update(task, total=n),
        )
    out = _console()
    out.print(report.summary())
    _print_counts(out, report, per_class)
    if report.dropped_classes:
        out.print(
            f"--classes present: dropped {len(report.dropped_classes)} classes with no images on disk: "
            + ", ".join(report.dropped_classes)
        )
    for note in report.notes:
        out.print(f"note: {note}")
    if report.expected_sizes and not report.dropped_classes and report.sizes != report.expected_sizes:
        out.print(f"note: split sizes {report.sizes} differ from the published {report.expected_sizes}")
    if not report.ok:
        bad = report.bad
        out.print(f"[bold red]{len(bad)} bad files[/]:")
        for path, why in bad[:show]:
            out.print(f"  {why}: {path}")
        if len(bad) > show:
            out.print(f"  ... {len(bad) - show} more (use --show N)")
        raise typer.Exit(1)


def _print_counts(out, report, per_class: bool) -> None:
    splits = [s for s in ("train", "val", "test") if sum(report.listed_counts[s])]
    if per_class or len(report.classnames) <= 50:
        rows = [
            [str(y), name, *[f"{report.good_counts[s][y]}/{report.listed_counts[s][y]}" for s in splits]]
            for y, name in enumerate(report.classnames)
        ]
        out.print(_table(["label", "class", *[f"{s} ok/listed" for s in splits]], rows), markup=False)
    else:
        for s in splits:
            good = report.good_counts[s]
            out.print(f"{s}: {sum(good)} images ok, {min(good)}-{max(good)} per class over {len(good)} classes")


@app.command()
def download(
    dataset: Annotated[str, typer.Argument(help="dataset name, e.g. dtd")],
    root: RootOpt = None,
    force: Annotated[bool, typer.Option(help="fetch again even what is already in place")] = False,
    keep_archives: Annotated[bool, typer.Option(help="keep the downloaded archives after extraction")] = False,
    timeout: Annotated[float, typer.Option(help="seconds without data before a connection is retried")] = 60,
    check: Annotated[bool, typer.Option(help="load the dataset afterwards to confirm the layout")] = True,
) -> None:
    """Download a dataset's public archives and split file into ROOT; print the manual steps where needed."""
    from restore.data.download import download_dataset  # slow: the downloader (tqdm), not loaded for `restore --help`

    out = _console()
    result = download_dataset(
        dataset,
        data_root(dataset, root),
        force=force,
        keep_archives=keep_archives,
        timeout=timeout,
        log=lambda m: out.print(m),
    )
    if not result.complete:
        out.print(f"[bold yellow]{result.dataset} needs a manual step[/]:\n{result.manual}")
        raise typer.Exit(1)
    if check:
        splits = load_dataset(result.dataset, result.root)
        out.print(f"{result.dataset}: ready, {splits.num_classes} classes, train/val/test {splits.sizes()}")


@app.command()
def info(
    dataset: Annotated[str, typer.Argument(help="dataset name")],
    root: RootOpt = None,
    classes: ClassesOpt = "all",
    split_file: SplitOpt = None,
) -> None:
    """Sizes, class count, base/novel split and loading notes of a dataset on disk."""
    splits = load_dataset(dataset, data_root(dataset, root), classes=_classes(classes), split_file=split_file)  # type: ignore[arg-type]
    out = _console()
    out.print(f"{splits.name}: {splits.num_classes} classes, train/val/test {splits.sizes()}")
    if splits.num_classes >= 2:
        base, novel = base_to_novel(splits)
        out.print(
            f"base-to-novel: {base.num_classes} base classes {base.sizes()}, "
            f"{novel.num_classes} novel classes {novel.sizes()}"
        )
    for note in splits.notes:
        out.print(f"note: {note}")


@app.command()
def fewshot(
    dataset: Annotated[str, typer.Argument(help="dataset name")],
    root: RootOpt = None,
    shots: Annotated[int, typer.Option(help="images per class (-1 or 0: all)")] = 16,
    seed: Annotated[int, typer.Option(help="run seed (CoOp's seeds are 1, 2, 3)")] = 1,
    classes: ClassesOpt = "all",
    split_file: SplitOpt = None,
    strict: Annotated[bool, typer.Option(help="fail when a class has fewer images than --shots")] = False,
    out_file: Annotated[Path | None, typer.Option("--out", help="write the few-shot split as CoOp JSON")] = None,
) -> None:
    """Draw (and cache) the CoOp-compatible few-shot split; optionally write it as a split file."""
    from restore.engine.run_config import MAX_COUNT, MAX_SEED  # slow: the engine loads torch

    _in_range("--shots", shots, -1, MAX_COUNT)
    _in_range("--seed", seed, 0, MAX_SEED)
    if out_file is not None and out_file.is_dir():
        raise ConfigError(f"--out {out_file} is a folder", hint="pass the path of the split file to write")
    splits = load_dataset(dataset, data_root(dataset, root), classes=_classes(classes), split_file=split_file)  # type: ignore[arg-type]
    fs = few_shot(splits, shots, seed, strict=strict)
    out = _console()
    out.print(f"{fs.name}: {shots} shots, seed {seed}: train {len(fs.train)}, val {len(fs.val)}, test {len(fs.test)}")
    for note in fs.notes:
        out.print(f"note: {note}")
    if out_file is not None:
        base = fs.image_root

        def rows(items):
            return [
                [
                    d.path.relative_to(base).as_posix() if base and d.path.is_relative_to(base) else str(d.path),
                    d.label,
                    d.classname,
                ]
                for d in items
            ]

        _write_split(out_file, {"train": rows(fs.train), "val": rows(fs.val), "test": rows(fs.test)})
        out.print(f"wrote {out_file}")


def _in_range(flag: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise ConfigError(f"{flag} {short(value)} is not from {low} to {high}", hint="see --help")


def _write_split(path: Path, data: dict) -> None:
    """The split file written whole (temporary file, then rename) or not at all, with one clear error."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(data))
    except (OSError, RestoreError) as e:
        why = getattr(e, "strerror", None) or getattr(e.__cause__, "strerror", None) or str(e)
        raise DataError(
            f"cannot write the split file {path}: {why}",
            hint="pass --out a file path in a folder you can write to",
        ) from None
