"""`restore report --format latex`: the report's tables as booktabs LaTeX, laid out as the papers print them.

A base-to-novel section becomes one small table per block, the Average first and then each dataset with its
Base / Novel / HM columns (CoOp's and MaPLe's layout); other sections are one table each. The best value of
every column is bold (ties all bold), the std is set small after the mean. The output is a complete document
that compiles with `pdflatex` (booktabs only), so each `table` environment can be copied into a paper as is.
"""

from __future__ import annotations

import re

from restore.results.report import MISSING, Grid, Report, blocks

_NUMBER = re.compile(r"^-?\d+(?:\.\d+)?")
#: Columns that are not accuracies: never bold.
_NOT_SCORES = {"Shots"}
_TEXT = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "–": "--",
    "—": "---",
    "−": "$-$",
    "±": r"$\pm$",
    "†": r"$^\dagger$",
    "·": r"$\cdot$",
    "×": r"$\times$",
    "“": "``",
    "”": "''",
    "…": r"\dots{}",
}


def escape(text: str) -> str:
    """Plain text as LaTeX: special characters escaped, the report's typographic symbols as LaTeX commands."""
    return "".join(_TEXT.get(ch, ch) for ch in text)


def leading_number(cell: str) -> float | None:
    """The mean a formatted cell starts with (`81.20 ± 0.35 (n=2)` → 81.2); None for an empty cell."""
    m = _NUMBER.match(cell.strip())
    return float(m.group()) if m else None


def _cell(text: str, bold: bool) -> str:
    if text in ("", MISSING):
        return "--" if text == MISSING else ""
    m = _NUMBER.match(text)
    if m is None:
        return escape(text)
    mean, rest = m.group(), text[m.end() :]
    out = rf"\textbf{{{mean}}}" if bold else mean
    std = re.match(r"\s*±\s*(\d+(?:\.\d+)?)", rest)
    if std:
        out += rf"{{\scriptsize$\pm${std.group(1)}}}"
        rest = rest[std.end() :]
    return out + escape(rest)


def best_per_column(g: Grid) -> list[float | None]:
    """The highest value of each column over all rows (None: no numbers, or not a score column)."""
    best: list[float | None] = []
    for i, name in enumerate(g.columns):
        values = [v for r in g.rows if (v := leading_number(r.cells[i])) is not None]
        best.append(max(values) if values and name not in _NOT_SCORES else None)
    return best


def tabular(g: Grid) -> list[str]:
    """One booktabs tabular: header, our rows, then published rows under their own rule."""
    best = best_per_column(g)
    lines = [
        r"\begin{tabular}{l" + "r" * len(g.columns) + "}",
        r"\toprule",
        " & ".join(escape(c) for c in [g.first, *g.columns]) + r" \\",
        r"\midrule",
    ]
    seen_published = False
    for row in g.rows:
        if row.published and not seen_published and row is not g.rows[0]:
            lines.append(r"\midrule")
        seen_published = seen_published or row.published
        label = rf"\textit{{{escape(row.label)}}}" if row.published else escape(row.label)
        cells = [_cell(c, best[i] is not None and leading_number(c) == best[i]) for i, c in enumerate(row.cells)]
        lines.append(" & ".join([label, *cells]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return lines


def render_latex(report: Report) -> str:
    """The whole report as one LaTeX document: a table per block, the footnotes under each section."""
    out = [
        f"% {report.title}: generated {report.generated_at} by `restore report --format latex`",
        f"% from {report.source}" + (f"; filters: {report.filters}" if report.filters else ""),
        r"\documentclass{article}",
        r"\usepackage[utf8]{inputenc}",
        r"\usepackage{booktabs}",
        r"\begin{document}",
        rf"\section*{{{escape(report.title)}}}",
    ]
    out += [escape(note) + "\n" for note in report.notes]
    for section in report.sections:
        out.append(rf"\subsection*{{{escape(section.title)}}}")
        for name, g in blocks(section.grid):
            caption = f"{section.title} — {name}" if name else section.title
            out += [r"\begin{table}[ht]", r"\centering", r"\small", rf"\caption{{{escape(caption)}}}"]
            out += tabular(g)
            out.append(r"\end{table}")
        if section.footnotes:
            out.append(r"\begin{enumerate}\footnotesize")
            out += [rf"\item {escape(note)}" for note in section.footnotes]
            out.append(r"\end{enumerate}")
        out.append(r"\clearpage")
    out.append(r"\end{document}")
    return "\n".join(out) + "\n"
