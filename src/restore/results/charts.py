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


def tight_limits(values: Sequence[float], errors: Sequence[float | None] = ()) -> tuple[float, float]:
    """y limits that hug the data (and its ± std), so a 1-2 point gap between methods is visible: the spread
    plus 8% (at least half a point) either side, clipped to [0, 100]."""
    errs = list(errors) + [None] * (len(values) - len(errors))
    lo = min(v - (e or 0.0) for v, e in zip(values, errs, strict=True))
    hi = max(v + (e or 0.0) for v, e in zip(values, errs, strict=True))
    pad = max(0.5, 0.08 * (hi - lo))
    return max(0.0, lo - pad), min(100.0, hi + pad)


def _dots(ax, groups: Sequence[str], series: dict[str, list[float | None]], errors: dict[str, list[float | None]]):
    """A dot per method and group, side by side within the group, ± std as an interval; missing values leave a
    gap. The y axis is tight around the values (`tight_limits`), not from 0: bars from 0 hide small gaps."""
    labels = list(series)
    step = 0.8 / max(1, len(labels))
    colors = _colors(labels)
    all_v: list[float] = []
    all_e: list[float | None] = []
    for i, label in enumerate(labels):
        xs, ys, es = [], [], []
        for g in range(len(groups)):
            v = series[label][g]
            if v is None:
                continue
            e = errors.get(label, [None] * len(groups))[g]
            xs.append(g - 0.4 + step * (i + 0.5))
            ys.append(v)
            es.append(0.0 if e is None else e)
            all_v.append(v)
            all_e.append(e)
        if xs:
            ax.errorbar(
                xs, ys, yerr=es, fmt="o", color=colors[label], label=label, markersize=6, elinewidth=1.2, capsize=3
            )
    if all_v:
        ax.set_ylim(*tight_limits(all_v, all_e))
    for g in range(1, len(groups)):
        ax.axvline(g - 0.5, color="#d8dde8", linewidth=0.8)
    rotate = len(groups) > 6
    ax.set_xticks(range(len(groups)), groups, rotation=20 if rotate else 0, ha="right" if rotate else "center")
    ax.set_xlim(-0.5, len(groups) - 0.5)
    ax.set_ylabel("top-1 accuracy (%)")
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)


def datasets_title(names: Sequence[str]) -> str:
    """The datasets a figure shows, for its title: all of them up to four, else how many."""
    names = list(names)
    return ", ".join(names) if len(names) <= 4 else f"{len(names)} datasets"


def _setting(backbone: str, shots: int | None) -> str:
    return f"backbone {backbone}" + (f", {shots} shots" if shots else "")


def _legend(fig: Figure, ax, n: int) -> None:
    """One legend above the panels, never over the bars."""
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=min(5, max(1, n)), fontsize=8, frameon=False)


def b2n_bars(table: B2NTable) -> Figure:
    """Base, Novel and HM per dataset (and the Average), one dot per method with ± std over seeds; each panel's
    y axis is tight around its values."""
    groups = ["Average", *table.datasets]
    fig = Figure(figsize=(_width(len(groups), len(table.rows)), 9), layout="constrained")
    axes = fig.subplots(3, 1, sharex=True)  # not sharey: each panel is tight around its own values
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
        _dots(ax, groups, series, errors)
        ax.set_title(metric if metric != "HM" else "HM (of the mean Base and Novel)", fontsize=10)
    _legend(fig, axes[0], len(table.rows))
    fig.suptitle(f"Base-to-novel on {datasets_title(table.datasets)} ({_setting(table.backbone, table.shots)})")
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
    _dots(ax, groups, series, errors)
    _legend(fig, ax, len(table.rows))
    fig.suptitle(
        f"Trained on {table.source}, evaluated on {datasets_title(table.splits)} "
        f"({_setting(table.backbone, table.shots)})"
    )
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
    fig.suptitle(f"Few-shot on {datasets_title(table.datasets)} ({_setting(table.backbone, None)})")
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
        plots = [Plot(f"{stem}-bars", f"Base / Novel / HM on {datasets_title(table.datasets)}", _png(b2n_bars(table)))]
    elif isinstance(table, TargetTable):
        plots = [
            Plot(f"{stem}-bars", f"Accuracy per evaluated dataset, trained on {table.source}", _png(target_bars(table)))
        ]
    else:
        plots = [Plot(f"{stem}-shots", "Accuracy against shots", _png(fewshot_lines(table)))]
    if table.shift:
        title = "Per-layer feature shift (mean over runs)"
        labels = list(dict.fromkeys(r.label for r in table.rows))  # the bar colours, so a method keeps its colour
        colors = _colors(labels + [c.label for c in table.shift if c.label not in labels])
        plots.append(Plot(f"{stem}-shift", title, _png(shift_curves(table.shift, title, colors))))
    return plots
