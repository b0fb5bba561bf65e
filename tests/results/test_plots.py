"""Report figures, checked through matplotlib's objects (axis limits, titles, legend entries), not pixels."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from restore.results.aggregate import aggregate
from restore.results.charts import b2n_bars, datasets_title, target_bars, tight_limits
from restore.results.records import RunRecord


def run(method, dataset, seed, metrics, protocol="b2n", backbone="world"):
    rec = RunRecord.new(
        method=method,
        dataset=dataset,
        protocol=protocol,
        seed=seed,
        backbone=backbone,
        shots=16,
        config={"method": {"name": method}, "data": {"dataset": dataset}, "seed": seed},
    )
    return dataclasses.replace(rec, status="finished", metrics=metrics).validated()


def b2n(base, novel):
    return {"base": {"top1": base}, "novel": {"top1": novel}}


def test_dot_plot_axis_hugs_the_data_so_a_one_point_gap_shows():
    runs = [
        run("coop", "dtd", 1, b2n(80.0, 60.0)),
        run("coop", "dtd", 2, b2n(82.0, 61.0)),
        run("maple", "dtd", 1, b2n(82.5, 62.0)),
    ]
    (table,) = aggregate(runs).tables
    fig = b2n_bars(table)
    base_ax = fig.axes[0]
    lo, hi = base_ax.get_ylim()
    # Independently: Base values 81 ± sqrt(2) (coop, two seeds) and 82.5 (maple); tight means within a few points.
    coop_std = float(np.std([80.0, 82.0], ddof=1))
    assert lo > 81.0 - coop_std - 2 and hi < 82.5 + 2  # not from 0
    assert lo <= 81.0 - coop_std and hi >= 82.5  # every interval inside
    assert (hi - lo) < 10 * (82.5 - 81.0)  # the 1.5-point gap takes a visible share of the axis
    novel_lo, novel_hi = fig.axes[1].get_ylim()
    assert novel_lo > 55 and novel_hi < 65  # each panel has its own tight axis
    assert fig.get_suptitle() == "Base-to-novel on dtd (backbone world, 16 shots)"
    _, labels = fig.axes[0].get_legend_handles_labels()
    assert labels == ["coop", "maple"]


def test_tight_limits_include_the_intervals_and_stay_within_0_100():
    assert tight_limits([50.0, 51.0], [1.0, None]) == pytest.approx((48.5, 51.5))
    assert tight_limits([99.8], [0.5]) == (pytest.approx(98.8), 100.0)
    assert tight_limits([0.2, 0.3])[0] == 0.0


def test_titles_name_the_datasets_not_only_the_backbone():
    assert datasets_title(["dtd", "eurosat"]) == "dtd, eurosat"
    assert datasets_title([f"d{i}" for i in range(11)]) == "11 datasets"
    xd = run("coop", "imagenet", 1, {"imagenet": {"top1": 70.0}, "dtd": {"top1": 40.0}}, protocol="xd")
    (table,) = aggregate([xd]).tables
    assert (
        target_bars(table).get_suptitle()
        == "Trained on imagenet, evaluated on imagenet, dtd (backbone world, 16 shots)"
    )
