"""Reports: the aggregated tables as a terminal table (rich), a Markdown file and one self-contained HTML page.

`build_report` turns run records into a `Report` (sections of formatted grids, footnotes and PNG plots);
the renderers only lay that out, so the three outputs always show the same numbers and footnotes.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table as RichTable
from rich.text import Text

from restore.errors import ResultsError
from restore.results.aggregate import (
    B2NTable,
    FewShotTable,
    Stat,
    Table,
    TargetTable,
    aggregate,
)
from restore.results.charts import Plot, table_plots
from restore.results.claims import AVERAGES, RULES, Claim
from restore.results.published import PUBLISHED_LABEL, Published, applies_to, published_rows
from restore.results.records import RunRecord, utc_now

PROTOCOL_TITLES = {
    "b2n": "Base-to-novel",
    "xd": "Cross-dataset",
    "dg": "Domain generalisation",
    "fewshot": "Few-shot",
    "train": "Plain runs",
}
HM_FOOTNOTE = (
    "HM is the harmonic mean of the mean Base and mean Novel accuracies, 2·B·N/(B+N) computed from the means over "
    "seeds, as the literature does (not the mean of per-seed HMs); it therefore has no ±."
)
MISSING = "–"


@dataclass
class GridRow:
    label: str
    cells: list[str]
    published: bool = False


@dataclass
class Grid:
    """A table laid out for rendering: an optional spanning header over `columns`, then rows of strings."""

    columns: list[str]
    rows: list[GridRow]
    groups: list[tuple[str, int]] = field(default_factory=list)  # (label, span) over `columns`
    first: str = "Method"
    text_columns: int = 0  # the first this many of `columns` hold prose (left-aligned), not numbers


def blocks(g: Grid) -> list[tuple[str, Grid]]:
    """A grouped grid as one small grid per group (the Average, then each dataset with its Base/Novel/HM), as
    the CoOp/MaPLe papers print base-to-novel results; rows with nothing in a group are left out of its block.
    An ungrouped grid is one block named ''."""
    if not g.groups:
        return [("", g)]
    out, start = [], 0
    for label, span in g.groups:
        rows = [
            GridRow(r.label, r.cells[start : start + span], r.published)
            for r in g.rows
            if any(c not in ("", MISSING) for c in r.cells[start : start + span])
        ]
        out.append((label, Grid(g.columns[start : start + span], rows, first=g.first)))
        start += span
    return out


@dataclass
class Section:
    title: str
    table: Table | None  # None: a section of its own kind (the claims), not an aggregated table
    grid: Grid
    footnotes: list[str]
    plots: list[Plot]


@dataclass
class Report:
    title: str
    source: str
    generated_at: str
    filters: dict[str, str]
    sections: list[Section]
    notes: list[str]


def fmt_stat(stat: Stat | None, full_n: int = 0) -> str:
    """`81.20 ± 0.35`; a cell with fewer seeds than the table's most says so: `81.20 (n=1)`."""
    if stat is None:
        return MISSING
    text = f"{stat.mean:.2f}" if stat.std is None else f"{stat.mean:.2f} ± {stat.std:.2f}"
    return text + (f" (n={stat.n})" if stat.n < full_n else "")


def _num(x: float | None) -> str:
    return MISSING if x is None else f"{x:.2f}"


def _seeds_note(stats: Iterable[Stat]) -> tuple[int, str]:
    stats = list(stats)
    full = max((s.n for s in stats), default=0)
    seeds = sorted({seed for s in stats for seed in s.seeds})
    text = (
        f"mean ± sample standard deviation (n − 1) over seeds ({', '.join(map(str, seeds))}); "
        f"(n=k) marks a cell with fewer than {full} seeds."
        if full > 1
        else f"one seed per cell (seed {', '.join(map(str, seeds))}), so no standard deviation."
    )
    return full, text


def _b2n_section(table: B2NTable) -> tuple[Grid, list[str]]:
    """Average first (where the published rows have numbers, as in the MaPLe README), then each dataset."""
    full, seeds_text = _seeds_note(s for r in table.rows for c in r.cells.values() for s in (c.base, c.novel))
    columns = ["Base", "Novel", "HM"] * (len(table.datasets) + 1)
    groups = [("Average", 3)] + [(d, 3) for d in table.datasets]
    rows = []
    partial = any(row.n_datasets < len(table.datasets) for row in table.rows)
    for row in table.rows:
        mark = " †" if row.n_datasets < len(table.datasets) else ""
        cells = [MISSING] * 3 if row.average is None else [f"{v:.2f}{mark}" for v in row.average]
        for d in table.datasets:
            c = row.cells.get(d)
            cells += [MISSING] * 3 if c is None else [fmt_stat(c.base, full), fmt_stat(c.novel, full), _num(c.hm)]
        rows.append(GridRow(row.label, cells))
    for row in table.published:
        cells = [_num(v) for v in row.average or (None, None, None)]
        for d in table.datasets:
            c = row.cells.get(d)
            cells += ["", "", ""] if c is None else [_num(c.base.mean), _num(c.novel.mean), _num(c.hm)]
        rows.append(GridRow(f"{row.label} — {PUBLISHED_LABEL}", cells, published=True))
    notes = [
        f"Base and Novel: top-1 accuracy (%) on the base and the novel test classes, {seeds_text}",
        HM_FOOTNOTE,
        "Average: the mean over datasets of the per-dataset means; its HM is the HM of the average Base and the "
        "average Novel."
        + (" † the method lacks some of this table's datasets: averaged over those it has." if partial else ""),
        *table.published_notes,
        *table.notes,
    ]
    return Grid(columns, rows, groups), notes


def _target_section(table: TargetTable) -> tuple[Grid, list[str]]:
    full, seeds_text = _seeds_note(s for r in table.rows for s in r.cells.values())
    columns = [f"{s} (source)" if s not in table.averaged and table.protocol != "train" else s for s in table.splits]
    if table.averaged:
        columns.append("Average")
    rows = []
    partial = False
    for row in table.rows:
        cells = [fmt_stat(row.cells.get(s), full) for s in table.splits]
        if table.averaged:
            mark = ""
            if row.n_targets < len(table.averaged):
                partial, mark = True, " †"
            cells.append(MISSING if row.average is None else f"{row.average:.2f}{mark}")
        rows.append(GridRow(row.label, cells))
    notes = [f"Top-1 accuracy (%) per evaluated split, {seeds_text}"]
    if table.averaged:
        notes.append(
            "Average: the mean over the target datasets of the per-target means (the source dataset is not included)."
            + (" † averaged over the targets the method has." if partial else "")
        )
    return Grid(columns, rows), notes + list(table.notes)


def _fewshot_section(table: FewShotTable) -> tuple[Grid, list[str]]:
    full, seeds_text = _seeds_note(s for r in table.rows for s in r.cells.values())
    columns = ["Shots", *table.datasets, "Average"]
    rows = []
    partial = any(row.n_datasets < len(table.datasets) for row in table.rows)
    for row in table.rows:
        mark = " †" if row.n_datasets < len(table.datasets) else ""
        cells = [str(row.shots), *(fmt_stat(row.cells.get(d), full) for d in table.datasets)]
        cells.append(MISSING if row.average is None else f"{row.average:.2f}{mark}")
        rows.append(GridRow(row.label, cells))
    notes = [
        f"Top-1 accuracy (%) on each dataset's test split with k shots per class, {seeds_text}",
        "Average: the mean over datasets of the per-dataset means."
        + (" † averaged over the datasets the method has." if partial else ""),
        *table.notes,
    ]
    return Grid(columns, rows), notes


def _title(table: Table) -> str:
    parts = [PROTOCOL_TITLES[table.protocol]]
    if isinstance(table, TargetTable):
        parts.append(f"{'dataset' if table.protocol == 'train' else 'source'} {table.source}")
    parts.append(table.backbone)
    shots = getattr(table, "shots", None)
    if shots:
        parts.append(f"{shots} shots")
    return " · ".join(parts)


def build_report(
    records: Iterable[RunRecord],
    *,
    source: str = "",
    filters: Mapping[str, str] | None = None,
    published: Published | None = None,
    published_missing: str | None = None,
    with_plots: bool = True,
    title: str = "restore results",
    claims: Sequence[Claim] | None = None,
    claims_source: str = "",
) -> Report:
    """Aggregate the records into report sections. Raises ResultsError when no finished run is among them.

    `published` adds labelled rows to base-to-novel tables of its backbone; `published_missing` is the note
    shown instead when the published file was looked for and not found. `claims` (checked on the sweep file
    `claims_source`) adds the paper's claims as the last section.
    """
    records = list(records)
    agg = aggregate(records)
    if not agg.tables:
        raise ResultsError(
            "no finished runs to report" + (f" ({'; '.join(agg.notes)})" if agg.notes else ""),
            hint="`restore results runs` lists what the database holds; relax the filters",
        )
    sections = []
    notes = list(agg.notes)
    stems: set[str] = set()
    for table in agg.tables:
        if published is not None and applies_to(published, table):
            rows, pnotes = published_rows(published, table.datasets)
            table = dataclasses.replace(table, published=rows, published_notes=pnotes)
        if isinstance(table, B2NTable):
            grid, footnotes = _b2n_section(table)
        elif isinstance(table, TargetTable):
            grid, footnotes = _target_section(table)
        else:
            grid, footnotes = _fewshot_section(table)
        stem = _stem(table, stems)
        plots = table_plots(table, stem) if with_plots else []
        sections.append(Section(_title(table), table, grid, footnotes, plots))
    if published_missing and any(isinstance(s.table, B2NTable) for s in sections):
        notes.append(published_missing)
    if claims is not None:
        sections.append(claims_section(claims, claims_source))
    return Report(title, source, utc_now(), dict(filters or {}), sections, notes)


def claims_section(claims: Sequence[Claim], sweep: str = "") -> Section:
    """The paper's claims as one table: a row per claim with its verdict, then a row per check."""
    rows = []
    missing: set[str] = set()
    for claim in claims:
        rows.append(GridRow(f"{claim.key} ({claim.source})", [claim.statement, "", "", claim.verdict.upper()]))
        for check in claim.checks:
            rows.append(GridRow("", [check.statement, check.numbers, check.difference, check.verdict]))
            missing.update(check.missing)
    notes = [AVERAGES, RULES]
    if missing:
        notes.append(
            f"{len(missing)} run(s) the claims need are missing: `restore sweep {sweep or 'SWEEP.yaml'}` runs them "
            "(finished runs are skipped)."
        )
    title = "The paper's claims" + (f" · {sweep}" if sweep else "")
    grid = Grid(["Check", "Numbers", "Difference", "Verdict"], rows, first="Claim", text_columns=2)
    return Section(title, None, grid, notes, [])


def _stem(table: Table, used: set[str]) -> str:
    parts = [table.protocol, table.backbone, str(getattr(table, "shots", "") or ""), getattr(table, "source", "")]
    stem = re.sub(r"[^A-Za-z0-9]+", "-", "-".join(p for p in parts if p)).strip("-").lower()
    candidate, i = stem, 2
    while candidate in used:
        candidate, i = f"{stem}-{i}", i + 1
    used.add(candidate)
    return candidate


# -- Markdown ----------------------------------------------------------------------------------------------


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def render_markdown(report: Report, plot_dir: str | None = None) -> str:
    """Markdown; plots are linked as `plot_dir/<name>.png` when given (the files are written beside it)."""
    out = [f"# {report.title}", ""]
    out.append(f"Generated {report.generated_at} from `{report.source}`.")
    if report.filters:
        out.append("Filters: " + ", ".join(f"{k} = {v}" for k, v in report.filters.items()) + ".")
    out.append("")
    for note in report.notes:
        out.append(f"> {note}")
    if report.notes:
        out.append("")
    for section in report.sections:
        out += [f"## {section.title}", ""]
        for name, g in blocks(section.grid):
            if name:
                out += [f"### {name}", ""]
            header = [g.first, *g.columns]
            out.append("| " + " | ".join(_md_escape(h) for h in header) + " |")
            out.append("|" + "---|" * (1 + g.text_columns) + "---:|" * (len(header) - 1 - g.text_columns))
            for row in g.rows:
                label = "" if not row.label else f"*{row.label}*" if row.published else f"**{row.label}**"
                out.append("| " + " | ".join([_md_escape(label), *(_md_escape(c) for c in row.cells)]) + " |")
            out.append("")
        for i, note in enumerate(section.footnotes, 1):
            out.append(f"{i}. {note}")
        out.append("")
        for plot in section.plots:
            if plot_dir is not None:
                out += [f"![{plot.title}]({plot_dir}/{plot.name}.png)", ""]
        if section.plots and plot_dir is None:
            out += ["*(Plots are written beside the Markdown file with `--out DIR`.)*", ""]
    return "\n".join(out).rstrip() + "\n"


# -- HTML --------------------------------------------------------------------------------------------------

_CSS = """
body { font-family: -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; margin: 2rem auto;
       max-width: 1400px; padding: 0 1.5rem; color: #1d2330; background: #ffffff; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; } h2 { font-size: 1.2rem; margin-top: 2.4rem;
       border-bottom: 2px solid #d8dde8; padding-bottom: .3rem; }
.meta { color: #5a6275; font-size: .9rem; }
.notes { background: #fff8e1; border-left: 4px solid #f0b400; padding: .5rem 1rem; font-size: .9rem; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: .85rem; margin: .8rem 0; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #d8dde8; padding: .3rem .55rem; white-space: nowrap; }
th { background: #eef1f7; text-align: center; }
td { text-align: right; } td.label { text-align: left; font-weight: 600; white-space: normal; min-width: 8rem; }
tr:nth-child(even) td { background: #f8f9fc; }
tr.published td { background: #f3f0fa; color: #4b3d73; font-style: italic; }
tr.published td.label { font-weight: 400; }
td.avg, th.avg { background: #eaf4ec; }
ol.footnotes { font-size: .82rem; color: #3b4252; max-width: 1100px; }
figure { margin: 1.2rem 0; } figure img { max-width: 100%; border: 1px solid #e3e6ee; }
figcaption { font-size: .85rem; color: #5a6275; }
.blocks { display: flex; flex-wrap: wrap; gap: 0 1.6rem; } .block h3 { font-size: 1rem; margin: 1rem 0 0; }
"""


def render_html(report: Report) -> str:
    """One self-contained page: inline CSS, PNGs as base64 data URIs, no scripts, no external resources."""
    e = html.escape
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{e(report.title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{e(report.title)}</h1>",
        f'<p class="meta">Generated {e(report.generated_at)} from <code>{e(report.source)}</code>.'
        + (" Filters: " + e(", ".join(f"{k} = {v}" for k, v in report.filters.items())) + "." if report.filters else "")
        + "</p>",
    ]
    if report.notes:
        out.append('<div class="notes">' + "".join(f"<p>{e(n)}</p>" for n in report.notes) + "</div>")
    for section in report.sections:
        out.append(f"<section><h2>{e(section.title)}</h2>")
        grouped = bool(section.grid.groups)
        if grouped:
            out.append('<div class="blocks">')
        for name, g in blocks(section.grid):
            avg_cols = set(range(len(g.columns))) if name == "Average" else _average_columns(g)
            out.append('<div class="block">' + (f"<h3>{e(name)}</h3>" if name else "") + '<div class="scroll"><table>')
            out.append(f"<thead><tr><th>{e(g.first)}</th>")
            out += [f"<th{' class=avg' if i in avg_cols else ''}>{e(c)}</th>" for i, c in enumerate(g.columns)]
            text = ' style="text-align: left; white-space: normal"'
            out.append("</tr></thead><tbody>")
            for row in g.rows:
                out.append('<tr class="published">' if row.published else "<tr>")
                out.append(f'<td class="label">{e(row.label)}</td>')
                out += [
                    f"<td{' class=avg' if i in avg_cols else text if i < g.text_columns else ''}>{e(c)}</td>"
                    for i, c in enumerate(row.cells)
                ]
                out.append("</tr>")
            out.append("</tbody></table></div></div>")
        if grouped:
            out.append("</div>")
        out.append('<ol class="footnotes">' + "".join(f"<li>{e(n)}</li>" for n in section.footnotes) + "</ol>")
        for plot in section.plots:
            data = base64.b64encode(plot.png).decode("ascii")
            out.append(
                f'<figure><img alt="{e(plot.title)}" src="data:image/png;base64,{data}">'
                f"<figcaption>{e(plot.title)}</figcaption></figure>"
            )
        out.append("</section>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def _average_columns(g: Grid) -> set[int]:
    if g.groups:
        cols, start = set(), 0
        for label, span in g.groups:
            if label == "Average":
                cols |= set(range(start, start + span))
            start += span
        return cols
    return {i for i, c in enumerate(g.columns) if c == "Average"}


# -- terminal ----------------------------------------------------------------------------------------------


def render_terminal(report: Report, console=None) -> None:
    """Rich tables, one per section, footnotes under each."""
    console = console or Console()
    for note in report.notes:  # notes and footnotes are plain text: "[key=value]" is not rich markup
        console.print(f"[yellow]note:[/] {escape(note)}", highlight=False)
    for section in report.sections:
        console.print(_long_table(section, console.width) or _wide_table(section))
        for i, note in enumerate(section.footnotes, 1):
            console.print(f"  {i}. {escape(note)}", highlight=False, soft_wrap=False)
        console.print()


def _wide_table(section: Section):
    g = section.grid
    t = RichTable(title=section.title, title_style="bold", header_style="bold", show_lines=False)
    t.add_column(g.first, justify="left", max_width=48, overflow="fold")
    if g.groups:
        i = 0
        for label, span in g.groups:
            for c in g.columns[i : i + span]:
                t.add_column(f"{label}\n{c}", justify="right")
            i += span
    else:
        for i, c in enumerate(g.columns):
            t.add_column(c, justify="left" if i < g.text_columns else "right")
    seen_published = False
    for row in g.rows:
        if row.published and not seen_published:
            t.add_section()
            seen_published = True
        # labels are plain text: a tag like "[method.n_ctx=2]" is not markup
        t.add_row(*map(Text, (row.label, *row.cells)), style="italic dim" if row.published else None)
    return t


def _long_table(section: Section, width: int):
    """A wide grouped table (datasets side by side) does not fit a narrow terminal: one row per method and
    group instead. None when the wide table fits or the groups do not share their columns."""
    g = section.grid
    if not g.groups or not g.rows:
        return None
    spans = {span for _, span in g.groups}
    if len(spans) != 1:
        return None
    span = spans.pop()
    sub = g.columns[:span]
    if any(g.columns[i : i + span] != sub for i in range(0, len(g.columns), span)):
        return None
    cell_w = max(len(c) for row in g.rows for c in [*row.cells, *g.columns])
    label_w = min(48, max(len(r.label) for r in g.rows))
    if label_w + len(g.columns) * (cell_w + 3) + 4 <= width:
        return None
    t = RichTable(title=section.title, title_style="bold", header_style="bold")
    t.add_column(g.first, justify="left", max_width=48, overflow="fold")
    t.add_column("", justify="left")
    for c in sub:
        t.add_column(c, justify="right")
    for r, row in enumerate(g.rows):
        if r:
            t.add_section()
        for k, (label, _) in enumerate(g.groups):
            cells = row.cells[k * span : (k + 1) * span]
            first = row.label if k == 0 else ""
            t.add_row(*map(Text, (first, label, *cells)), style="italic dim" if row.published else None)
    return t


# -- files -------------------------------------------------------------------------------------------------


def write_report(report: Report, out_dir: str | Path, formats: Sequence[str] = ("markdown", "html")) -> list[Path]:
    """Write `report.md` (with its PNGs under `plots/`), `report.html` and/or `report.tex` into `out_dir`;
    return the paths."""
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        written = []
        if "markdown" in formats:
            plot_dir = out_dir / "plots"
            if any(s.plots for s in report.sections):
                plot_dir.mkdir(exist_ok=True)
            for section in report.sections:
                for plot in section.plots:
                    (plot_dir / f"{plot.name}.png").write_bytes(plot.png)
            path = out_dir / "report.md"
            path.write_text(render_markdown(report, plot_dir="plots"), encoding="utf-8")
            written.append(path)
        if "html" in formats:
            path = out_dir / "report.html"
            path.write_text(render_html(report), encoding="utf-8")
            written.append(path)
        if "latex" in formats:
            from restore.results.latex import render_latex  # latex imports this module

            path = out_dir / "report.tex"
            path.write_text(render_latex(report), encoding="utf-8")
            written.append(path)
    except OSError as err:
        raise ResultsError(
            f"cannot write the report into {out_dir}: {err}", hint="choose another --out folder"
        ) from None
    return written
