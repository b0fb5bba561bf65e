"""Aggregation over seeds, checked against plain recomputation with numpy."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from restore.results.aggregate import Stat, aggregate, select_runs
from restore.results.records import RunRecord


def run(
    method,
    dataset,
    seed,
    metrics,
    protocol="b2n",
    backbone="ViT-B/16",
    shots=16,
    status="finished",
    tag="",
    finished_at="2025-01-01T00:00:00.000000Z",
    schedule=None,
):
    rec = RunRecord.new(
        method=method,
        dataset=dataset,
        protocol=protocol,
        seed=seed,
        backbone=backbone,
        shots=shots,
        config={
            "method": {"name": method},
            "data": {"dataset": dataset},
            "seed": seed,
            **({"schedule": schedule} if schedule else {}),
        },
        tag=tag,
    )
    error = "boom" if status == "failed" else None
    return dataclasses.replace(rec, status=status, metrics=metrics, finished_at=finished_at, error=error).validated()


def b2n(base, novel):
    return {"base": {"top1": base}, "novel": {"top1": novel}}


def hm(b, n):
    return 2 * b * n / (b + n)


def test_stat_is_mean_and_sample_std_over_seeds():
    s = Stat.of({3: 70.0, 1: 80.0, 2: 72.5})
    assert s.mean == pytest.approx(np.mean([80, 72.5, 70]))
    assert s.std == pytest.approx(np.std([80, 72.5, 70], ddof=1))
    assert s.seeds == (1, 2, 3) and s.n == 3
    assert Stat.of({1: 55.0}).std is None


def test_b2n_hm_is_the_hm_of_the_means_not_the_mean_of_hms():
    runs = [run("coop", "dtd", 1, b2n(90.0, 30.0)), run("coop", "dtd", 2, b2n(60.0, 70.0))]
    (table,) = aggregate(runs).tables
    cell = table.rows[0].cells["dtd"]
    assert cell.hm == pytest.approx(hm(75.0, 50.0))
    assert cell.hm != pytest.approx(np.mean([hm(90, 30), hm(60, 70)]), abs=0.5)  # the two conventions differ here


def test_b2n_table_numbers_and_average_over_datasets():
    data = {  # method -> dataset -> seed -> (base, novel)
        "coop": {"dtd": {1: (80.0, 60.0), 2: (82.0, 58.0)}, "eurosat": {1: (90.0, 55.0), 2: (88.0, 65.0)}},
        "maple": {"dtd": {1: (78.0, 70.0), 2: (79.0, 72.0)}, "eurosat": {1: (91.0, 75.0), 2: (93.0, 71.0)}},
    }
    runs = [run(m, d, s, b2n(*v)) for m, ds in data.items() for d, ss in ds.items() for s, v in ss.items()]
    (table,) = aggregate(runs).tables
    assert table.datasets == ("dtd", "eurosat") and [r.label for r in table.rows] == ["coop", "maple"]
    for row in table.rows:
        means = {}
        for d, cell in row.cells.items():
            bs = [v[0] for v in data[row.label][d].values()]
            ns = [v[1] for v in data[row.label][d].values()]
            assert cell.base.mean == pytest.approx(np.mean(bs)) and cell.base.std == pytest.approx(np.std(bs, ddof=1))
            assert cell.novel.mean == pytest.approx(np.mean(ns)) and cell.novel.std == pytest.approx(np.std(ns, ddof=1))
            means[d] = (np.mean(bs), np.mean(ns))
        avg_b = np.mean([b for b, _ in means.values()])
        avg_n = np.mean([n for _, n in means.values()])
        assert row.average == pytest.approx((avg_b, avg_n, hm(avg_b, avg_n)))
        assert row.n_datasets == 2


def test_tables_split_by_backbone_and_shots_and_tags_stay_apart():
    runs = [
        run("coop", "dtd", 1, b2n(80, 60)),
        run("coop", "dtd", 1, b2n(70, 50), backbone="tiny"),
        run("coop", "dtd", 1, b2n(60, 40), shots=4),
        run("coop", "dtd", 1, b2n(10, 10), tag="lr0.1"),
    ]
    tables = aggregate(runs).tables
    assert [(t.backbone, t.shots) for t in tables] == [("ViT-B/16", 4), ("ViT-B/16", 16), ("tiny", 16)]
    assert [r.label for r in tables[1].rows] == ["coop", "coop [lr0.1]"]
    assert tables[1].rows[0].cells["dtd"].base.mean == 80


def test_rows_of_two_schedule_sets_are_never_averaged_together():
    runs = [
        run("maple", "dtd", 1, b2n(80.0, 70.0), schedule="own"),
        run("maple", "dtd", 2, b2n(82.0, 72.0), schedule="own"),
        run("maple", "dtd", 1, b2n(60.0, 50.0), schedule="restore_paper"),  # same seed, another set: not a duplicate
        run("restore_m", "dtd", 1, b2n(84.0, 76.0), schedule="restore_paper", tag="surgery=none"),
    ]
    (table,) = aggregate(runs).tables
    labels = [r.label for r in table.rows]
    assert labels == ["maple (own)", "maple (restore_paper)", "restore_m (restore_paper) [surgery=none]"]
    own, paper = table.rows[0].cells["dtd"], table.rows[1].cells["dtd"]
    assert (own.base.mean, own.novel.mean, own.base.n) == (81.0, 71.0, 2)
    assert (paper.base.mean, paper.novel.mean, paper.base.n) == (60.0, 50.0, 1)
    assert any("(restore_paper): the RESTORE paper's re-runs" in n for n in table.notes)
    assert "This table mixes schedule sets (own, restore_paper): compare rows of the same set." in table.notes
    (only_paper,) = aggregate(runs[2:]).tables
    assert not any("mixes" in n for n in only_paper.notes)
    from restore.results.report import build_report, render_html, render_markdown

    report = build_report(runs, with_plots=False)
    markdown, html = render_markdown(report), render_html(report)
    for label in labels:
        assert f"| **{label}** |" in markdown and f'<td class="label">{label}</td>' in html
    assert "compare rows of the same set" in markdown and "compare rows of the same set" in html


def test_only_finished_runs_count_and_the_latest_duplicate_wins():
    runs = [
        run("coop", "dtd", 1, b2n(50, 50), finished_at="2025-01-01T00:00:00.000000Z"),
        run("coop", "dtd", 1, b2n(80, 60), finished_at="2025-02-01T00:00:00.000000Z"),
        run("coop", "dtd", 2, {"base": {"top1": 1.0}}, status="failed"),
        run("coop", "dtd", 3, {}, status="running"),
    ]
    kept, notes = select_runs(runs)
    assert [(r.seed, r.metrics["base"]["top1"]) for r in kept] == [(1, 80)]
    assert notes[0] == "Not included (not finished): 1 failed, 1 running."
    assert "1 finished run(s) repeat" in notes[1]


def test_a_method_missing_a_dataset_averages_over_what_it_has():
    runs = [
        run("coop", "dtd", 1, b2n(80, 60)),
        run("coop", "eurosat", 1, b2n(90, 50)),
        run("maple", "dtd", 1, b2n(70, 70)),
    ]
    (table,) = aggregate(runs).tables
    maple = table.rows[1]
    assert maple.n_datasets == 1 and maple.average == pytest.approx((70, 70, 70))


def test_cross_dataset_average_leaves_the_source_out():
    metrics = {"imagenet": {"top1": 70.0}, "caltech101": {"top1": 90.0}, "dtd": {"top1": 40.0}}
    runs = [
        run("coop", "ImageNet", s, {k: {"top1": v["top1"] + s} for k, v in metrics.items()}, protocol="xd")
        for s in (1, 2)
    ]
    (table,) = aggregate(runs).tables
    assert table.splits == ("imagenet", "caltech101", "dtd") and table.averaged == ("caltech101", "dtd")
    row = table.rows[0]
    assert row.cells["imagenet"].mean == pytest.approx(71.5)
    assert row.average == pytest.approx(np.mean([91.5, 41.5]))


def test_fewshot_rows_per_shots_with_the_test_split():
    runs = [
        run("coop", d, s, {"test": {"top1": 10.0 * k + s + (5 if d == "dtd" else 0)}}, protocol="fewshot", shots=k)
        for d in ("dtd", "eurosat")
        for s in (1, 2)
        for k in (1, 4)
    ]
    (table,) = aggregate(runs).tables
    assert [(r.label, r.shots) for r in table.rows] == [("coop", 1), ("coop", 4)]
    one = table.rows[0]
    assert one.cells["dtd"].mean == pytest.approx(16.5) and one.cells["eurosat"].mean == pytest.approx(11.5)
    assert one.average == pytest.approx(14.0)


def test_shift_curves_are_averaged_per_method_and_odd_lengths_noted():
    shifts = [[1.0, 2.0, 3.0], [3.0, 4.0, 5.0], [9.0, 9.0]]
    runs = [
        run("restore_m", "dtd", s, {**b2n(80, 60), "shift": {"vision": v, "text": [0.5] * len(v), "discrepancy": s}})
        for s, v in enumerate(shifts, 1)
    ]
    (table,) = aggregate(runs).tables
    (curve,) = table.shift
    assert curve.vision == pytest.approx((2.0, 3.0, 4.0)) and curve.text == pytest.approx((0.5, 0.5, 0.5))
    assert curve.n_runs == 3 and curve.discrepancy == pytest.approx(2.0)
    assert any("different number of layers" in n for n in table.notes)
