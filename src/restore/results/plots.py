"""PNG figures for reports, drawn with matplotlib's object API (no pyplot state, no display needed)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from restore.results.aggregate import B2NTable, FewShotTable, ShiftCurve, TargetTable

_DPI = 100


@dataclass(frozen=True)
class Plot:
    name: str  # file stem, unique within a report
    title: str
    png: bytes


def _colors(labels: Sequence[str]) -> dict[str, str]:
    palette = [f"C{i}" for i in range(10)]
    return {label: palette[i % len(palette)] for i, label in enumerate(labels)}


def _width(groups: int, series: int) -> float:
    """Inches: about a quarter inch per bar plus margins, between 7 and 16 (a page, not a poster)."""
    return min(16.0, max(7.0, 0.25 * groups * max(1, series) + 0.3 * groups + 1.5))


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI, metadata={"Software": None})
    return buf.getvalue()


def _bars(ax, groups: Sequence[str], series: dict[str, list[float | None]], errors: dict[str, list[float | None]]):
    """Grouped bars: one group per x label, one bar per series; missing values leave a gap; std as error bars."""
    labels = list(series)
    width = 0.8 / max(1, len(labels))
    colors = _colors(labels)
    for i, label in enumerate(labels):
        xs, ys, ex, ey, es = [], [], [], [], []
        for g in range(len(groups)):
            v = series[label][g]
            if v is None:
                continue
            x = g - 0.4 + width * (i + 0.5)
            xs.append(x)
            ys.append(v)
            e = errors.get(label, [None] * len(groups))[g]
            if e is not None:
                ex.append(x)
                ey.append(v)
                es.append(e)
        ax.bar(xs, ys, width=width * 0.95, color=colors[label], label=label, linewidth=0)
        if es:
            ax.errorbar(ex, ey, yerr=es, fmt="none", ecolor="black", elinewidth=1, capsize=2)
    rotate = len(groups) > 6
    ax.set_xticks(range(len(groups)), groups, rotation=20 if rotate else 0, ha="right" if rotate else "center")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)


def _legend(fig: Figure, ax, n: int) -> None:
    """One legend above the panels, never over the bars."""
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=min(5, max(1, n)), fontsize=8, frameon=False)


def b2n_bars(table: B2NTable) -> Figure:
    """Base, Novel and HM per dataset (and the Average), one bar per method; error bars: std over seeds."""
    groups = ["Average", *table.datasets]
    fig = Figure(figsize=(_width(len(groups), len(table.rows)), 9), layout="constrained")
    axes = fig.subplots(3, 1, sharex=True)
    for ax, metric in zip(axes, ("Base", "Novel", "HM"), strict=True):
        series: dict[str, list[float | None]] = {}
        errors: dict[str, list[float | None]] = {}
        for row in table.rows:
            vals: list[float | None] = [
                None if row.average is None else row.average[("Base", "Novel", "HM").index(metric)]
            ]
            errs: list[float | None] = [None]
            for d in table.datasets:
                cell = row.cells.get(d)
                if cell is None:
                    vals.append(None)
                    errs.append(None)
                elif metric == "HM":
                    vals.append(cell.hm)
                    errs.append(None)
                else:
                    stat = cell.base if metric == "Base" else cell.novel
                    vals.append(stat.mean)
                    errs.append(stat.std)
            series[row.label] = vals
            errors[row.label] = errs
        _bars(ax, groups, series, errors)
        ax.set_title(metric if metric != "HM" else "HM (of the mean Base and Novel)", fontsize=10)
    _legend(fig, axes[0], len(table.rows))
    fig.suptitle(f"Base-to-novel, {table.backbone}" + (f", {table.shots} shots" if table.shots else ""))
    return fig


def target_bars(table: TargetTable) -> Figure:
    groups = list(table.splits) + (["Average"] if table.averaged else [])
    fig = Figure(figsize=(_width(len(groups), len(table.rows)), 4.5), layout="constrained")
    ax = fig.subplots()
    series = {
        row.label: [row.cells[s].mean if s in row.cells else None for s in table.splits]
        + ([row.average] if table.averaged else [])
        for row in table.rows
    }
    errors = {
        row.label: [row.cells[s].std if s in row.cells else None for s in table.splits] + [None] for row in table.rows
    }
    _bars(ax, groups, series, errors)
    _legend(fig, ax, len(table.rows))
    fig.suptitle(f"{table.source} → each evaluated dataset, {table.backbone}")
    return fig


def fewshot_lines(table: FewShotTable) -> Figure:
    panels = ["Average", *table.datasets] if len(table.datasets) > 1 else list(table.datasets)
    cols = min(3, len(panels))
    rows_n = -(-len(panels) // cols)
    fig = Figure(figsize=(4.2 * cols, 3.3 * rows_n), layout="constrained")
    axes = fig.subplots(rows_n, cols, squeeze=False).ravel()
    labels = sorted({r.label for r in table.rows}, key=[r.label for r in table.rows].index)
    colors = _colors(labels)
    for ax, panel in zip(axes, panels, strict=False):
        for label in labels:
            pts = []
            for r in table.rows:
                if r.label != label:
                    continue
                if panel == "Average":
                    if r.n_datasets == len(table.datasets):
                        pts.append((r.shots, r.average))
                elif panel in r.cells:
                    pts.append((r.shots, r.cells[panel].mean))
            if pts:
                xs, ys = zip(*sorted(pts), strict=True)
                ax.plot(xs, ys, marker="o", color=colors[label], label=label)
        ticks = sorted({r.shots for r in table.rows})
        if ticks and ticks[0] == 0:  # zero-shot as a point of the curve
            ax.set_xscale("symlog", base=2, linthresh=1)
        else:
            ax.set_xscale("log", base=2)
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.minorticks_off()
        ax.set_title(panel, fontsize=10)
        ax.set_xlabel("shots per class")
        ax.set_ylabel("top-1 (%)")
        ax.grid(alpha=0.3)
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    _legend(fig, axes[0], len(labels))
    fig.suptitle(f"Few-shot, {table.backbone}")
    return fig


def shift_curves(curves: Sequence[ShiftCurve], title: str, colors: dict[str, str] | None = None) -> Figure:
    """Per-layer feature-shift magnitude s_l, vision and text side by side, one line per method."""
    fig = Figure(figsize=(10, 4), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    colors = colors or _colors([c.label for c in curves])
    for ax, tower in zip(axes, ("vision", "text"), strict=True):
        for c in curves:
            ys = getattr(c, tower)
            if ys:
                ax.plot(
                    range(1, len(ys) + 1), ys, marker="o", color=colors[c.label], label=f"{c.label} ({c.n_runs} runs)"
                )
        ax.set_title(f"{tower} tower", fontsize=10)
        ax.set_xlabel("layer")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("feature shift $s_l$")
    _legend(fig, axes[0], len(curves))
    fig.suptitle(title)
    return fig


def table_plots(table: B2NTable | TargetTable | FewShotTable, stem: str) -> list[Plot]:
    """The figures that go with one table."""
    if isinstance(table, B2NTable):
        plots = [Plot(f"{stem}-bars", "Base / Novel / HM per dataset", _png(b2n_bars(table)))]
    elif isinstance(table, TargetTable):
        plots = [Plot(f"{stem}-bars", "Accuracy per target", _png(target_bars(table)))]
    else:
        plots = [Plot(f"{stem}-shots", "Accuracy against shots", _png(fewshot_lines(table)))]
    if table.shift:
        title = "Per-layer feature shift (mean over runs)"
        labels = list(dict.fromkeys(r.label for r in table.rows))  # the bar colours, so a method keeps its colour
        colors = _colors(labels + [c.label for c in table.shift if c.label not in labels])
        plots.append(Plot(f"{stem}-shift", title, _png(shift_curves(table.shift, title, colors))))
    return plots
