"""`restore results …` and `restore report`: read the results database, list runs, and write reports.

Mount with `app.add_typer(results.cli.app, name="results")` and `app.command("report")(results.cli.report)`.
"""

from __future__ import annotations

import enum
import json
import sys
from pathlib import Path

import typer

from restore.errors import ConfigError
from restore.results.db import ENV_LOCATION, default_results_location, open_results
from restore.results.published import default_published_path, load_published
from restore.results.records import harmonic_mean

app = typer.Typer(
    name="results",
    help="The results database: list runs, show one, mark dead runs, and report.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


class Protocol(enum.StrEnum):
    b2n = "b2n"
    xd = "xd"
    dg = "dg"
    fewshot = "fewshot"
    train = "train"


class Format(enum.StrEnum):
    table = "table"
    markdown = "markdown"
    html = "html"
    latex = "latex"


class Status(enum.StrEnum):
    running = "running"
    finished = "finished"
    failed = "failed"
    interrupted = "interrupted"


DB_HELP = f"Results database file (default ${ENV_LOCATION}, else runs/results.sqlite)."
DbOption = typer.Option(None, "--db", help=DB_HELP, show_default=False)
ProtocolOption = typer.Option(None, "--protocol", "-p", help="Only these protocols (repeatable).")
MethodOption = typer.Option(None, "--method", "-m", help="Only these methods (repeatable).")
DatasetOption = typer.Option(None, "--dataset", "-d", help="Only these datasets (repeatable).")
BackboneOption = typer.Option(None, "--backbone", "-b", help="Only these backbones, e.g. ViT-B/16 (repeatable).")
ShotsOption = typer.Option(None, "--shots", help="Only these shot counts (repeatable).")
TagOption = typer.Option(None, "--tag", help="Only these variant tags (repeatable; '' is the untagged runs).")


def _filters(**kw) -> dict[str, list]:
    return {k: [v.value if isinstance(v, enum.Enum) else v for v in vals] for k, vals in kw.items() if vals}


@app.command("report")
def report(
    db: str | None = DbOption,
    protocol: list[Protocol] | None = ProtocolOption,
    fmt: list[Format] | None = typer.Option(
        None,
        "--format",
        "-f",
        help="table (terminal), markdown, html, latex (booktabs, best per column bold); repeatable. "
        "Default: table, plus markdown and html with --out.",
    ),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Folder for report.md (+ plots/), report.html and report.tex."
    ),
    method: list[str] | None = MethodOption,
    dataset: list[str] | None = DatasetOption,
    backbone: list[str] | None = BackboneOption,
    shots: list[int] | None = ShotsOption,
    tag: list[str] | None = TagOption,
    published: Path | None = typer.Option(
        None,
        "--published",
        help="Published base-to-novel numbers (default: the ones shipped with restore, each with its source).",
    ),
    no_published: bool = typer.Option(False, "--no-published", help="Leave the published rows out."),
    title: str = typer.Option("restore results", "--title", help="Report title."),
    claims: Path | None = typer.Option(
        None,
        "--claims",
        help="A claims sweep file (configs/sweeps/world_claims.yaml): add the paper's claims C1-C5 checked on its "
        "runs, each with its numbers, spread over seeds and verdict.",
    ),
) -> None:
    """Mean ± std over seeds per method × dataset: the paper-style tables, with plots in Markdown/HTML."""
    formats = [f.value for f in fmt] if fmt else (["table", "markdown", "html"] if out else ["table"])
    documents = [f for f in formats if f != "table"]
    if out is not None and not documents:
        raise ConfigError(
            "--out writes Markdown, HTML or LaTeX files, but --format asks only for the terminal table",
            hint="add --format markdown, html and/or latex, or drop --out",
        )
    if out is None and len(formats) > 1:
        raise ConfigError(
            f"--format {' and '.join(formats)} cannot all go to the terminal",
            hint="give --out DIR to write Markdown, HTML and LaTeX files, or choose one format",
        )
    filters = _filters(protocol=protocol, method=method, dataset=dataset, backbone=backbone, shots=shots, tag=tag)
    location = db or default_results_location()
    claim_list = None
    with open_results(location, readonly=True) as store:
        records = store.query(**filters)
        if claims is not None:  # the sweep file says which runs; the table filters do not narrow them
            # slow: claims and grids load the engine (torch), which other commands do not pay for
            from restore.scale.claim_runs import claims_for
            from restore.scale.grid import load_grid

            claim_list = claims_for(load_grid(claims), store.query() if filters else records)

    pub, missing = None, None
    if not no_published:
        path = published or default_published_path()
        if published is not None or path.exists():
            pub = load_published(path)
        else:
            missing = f"Published numbers not found at {path}; no published rows (pass --published FILE)."

    # Imported here: report pulls in matplotlib, which every other command start would pay for.
    from restore.results.report import build_report, render_html, render_markdown, render_terminal, write_report

    rep = build_report(
        records,
        source=location,
        filters={k: ", ".join(map(str, v)) for k, v in filters.items()},
        published=pub,
        published_missing=missing,
        with_plots="html" in documents or (out is not None and "markdown" in documents),
        title=title,
        claims=claim_list,
        claims_source="" if claims is None else str(claims),
    )
    if "table" in formats:
        render_terminal(rep)
    if out is not None and documents:
        for path in write_report(rep, out, documents):
            typer.echo(f"wrote {path}")
    elif documents:
        from restore.results.latex import render_latex  # slow: latex imports report (matplotlib)

        render = {"markdown": render_markdown, "html": render_html, "latex": render_latex}[documents[0]]
        sys.stdout.write(render(rep))


def _headline(r) -> str:
    m = r.metrics
    if r.protocol == "b2n" and "base" in m and "novel" in m:
        b, n = m["base"]["top1"], m["novel"]["top1"]
        return f"B {b:.2f} N {n:.2f} HM {harmonic_mean(b, n):.2f}"
    splits = [k for k, v in m.items() if isinstance(v, dict) and "top1" in v]
    return " ".join(f"{k} {m[k]['top1']:.2f}" for k in splits[:3]) + (" …" if len(splits) > 3 else "")


@app.command("runs")
def runs(
    db: str | None = DbOption,
    status: list[Status] | None = typer.Option(None, "--status", "-s", help="Only these statuses (repeatable)."),
    protocol: list[Protocol] | None = ProtocolOption,
    method: list[str] | None = MethodOption,
    dataset: list[str] | None = DatasetOption,
    backbone: list[str] | None = BackboneOption,
    shots: list[int] | None = ShotsOption,
    tag: list[str] | None = TagOption,
    as_json: bool = typer.Option(False, "--json", help="One JSON record per line instead of a table."),
) -> None:
    """List the runs in the database, oldest first."""
    filters = _filters(
        status=status, protocol=protocol, method=method, dataset=dataset, backbone=backbone, shots=shots, tag=tag
    )
    with open_results(db or default_results_location(), readonly=True) as store:
        records = store.query(**filters)
    if as_json:
        for r in records:
            typer.echo(json.dumps(r.to_dict(), sort_keys=True))
        return
    # slow: rich is not loaded for `restore --help`
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"{len(records)} run{'' if len(records) == 1 else 's'}")
    for col in ("run", "status", "method", "dataset", "protocol", "shots", "seed", "backbone", "result", "started"):
        t.add_column(col, no_wrap=col in ("run", "status"))
    colors = {"finished": "green", "failed": "red", "running": "cyan", "interrupted": "yellow"}
    for r in records:
        result = _headline(r) if r.status == "finished" else (r.error or "")[:60]
        t.add_row(
            r.run_id,
            f"[{colors[r.status]}]{r.status}[/]",
            r.label,
            r.dataset,
            r.protocol,
            "" if r.shots is None else str(r.shots),
            str(r.seed),
            r.backbone,
            result,
            r.started_at[:19].replace("T", " "),
        )
    Console().print(t)


@app.command("show")
def show(
    run_id: str = typer.Argument(..., help="The run id (see `restore results runs`)."), db: str | None = DbOption
) -> None:
    """Print one run's full record as JSON."""
    with open_results(db or default_results_location(), readonly=True) as store:
        record = store.get(run_id)
    typer.echo(json.dumps(record.to_dict(), indent=2, sort_keys=True))


@app.command("tag")
def tag_runs(
    tag: str = typer.Argument(..., help="The variant name reports show for these runs ('' removes the tag)."),
    run_ids: list[str] = typer.Argument(..., help="The runs to tag (see `restore results runs`)."),
    db: str | None = DbOption,
) -> None:
    """Name a variant after the fact: tagged runs form their own report row, labelled `method [TAG]`."""
    if "\n" in tag or tag != tag.strip():
        raise ConfigError(
            f"tag {tag!r} has surrounding spaces or a line break", hint="use a short one-line name, e.g. lr-0.01"
        )
    with open_results(db or default_results_location(), create=False) as store:
        for record in [store.get(run_id) for run_id in run_ids]:  # all exist before any changes
            store.set_tag(record.run_id, tag)
            before = f" (was {record.tag!r})" if record.tag and record.tag != tag else ""
            typer.echo(f"tagged {record.run_id} {tag!r}{before}" if tag else f"untagged {record.run_id}{before}")


@app.command("mark-interrupted")
def mark_interrupted(
    run_ids: list[str] | None = typer.Argument(None, help="Mark these running runs (default: detect dead ones)."),
    stale_after: float | None = typer.Option(
        None, "--stale-after", help="Also mark runs on any host with no heartbeat for this many seconds."
    ),
    db: str | None = DbOption,
) -> None:
    """Mark runs left `running` by a process that is gone as `interrupted`, so they can be resumed or rerun."""
    with open_results(db or default_results_location(), create=False) as store:
        marked = store.mark_interrupted(stale_after_s=stale_after, run_ids=run_ids or None)
    for run_id in marked:
        typer.echo(f"interrupted {run_id}")
    typer.echo(f"{len(marked)} run(s) marked interrupted")
