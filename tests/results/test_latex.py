"""`restore report --format latex`: booktabs tables per dataset block, the best value of each column bold."""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest
from typer.testing import CliRunner

import restore.results.results_commands as results_cli
from restore.results.latex import escape, leading_number

from .conftest import DATASETS, METHODS

WIDE = {"COLUMNS": "400", "NO_COLOR": "1"}


def latex_tables(text):
    """{caption: [[cells...] per row, header first]} and the rule lines of each tabular."""
    tables, rules = {}, {}
    for caption, body in re.findall(r"\\caption\{(.*?)\}\n(\\begin\{tabular\}.*?\\end\{tabular\})", text, re.S):
        lines = body.splitlines()
        rules[caption] = [line for line in lines if line.endswith("rule")]
        rows = [line.removesuffix(r" \\").split(" & ") for line in lines if line.endswith(r" \\")]
        tables[caption] = rows
    return tables, rules


def test_latex_report_has_booktabs_blocks_with_the_best_value_bold(filled_db):
    path, numbers = filled_db
    result = CliRunner().invoke(
        results_cli.app, ["report", "--db", str(path), "-f", "latex", "--no-published", "-p", "b2n"], env=WIDE
    )
    assert result.exit_code == 0, result.output
    tex = result.output
    assert tex.count(r"\begin{document}") == 1 and r"\usepackage{booktabs}" in tex
    tables, rules = latex_tables(tex)
    title = r"Base-to-novel $\cdot$ ViT-B/16 $\cdot$ 16 shots"
    assert [c for c in tables if c.startswith(title)] == [f"{title} --- {b}" for b in ("Average", *DATASETS)]
    for caption in tables:
        assert rules[caption] == [r"\toprule", r"\midrule", r"\bottomrule"]
        assert tables[caption][0] == ["Method", "Base", "Novel", "HM"]

    def hm(b, n):
        return 2 * b * n / (b + n)

    for backbone in ("ViT-B/16", "tiny"):
        # An independent recomputation: the per-dataset means, then the best of each column over the methods.
        means = {
            m: {d: [np.mean([v[i] for v in numbers[backbone][m][d].values()]) for i in (0, 1)] for d in DATASETS}
            for m in METHODS
        }
        for d in DATASETS:
            rows = tables[rf"Base-to-novel $\cdot$ {backbone} $\cdot$ 16 shots --- {d}"][1:]
            assert [r[0] for r in rows] == list(METHODS)
            expected = {m: [*means[m][d], hm(*means[m][d])] for m in METHODS}
            for col in range(3):
                best = max(expected[m][col] for m in METHODS)
                for r in rows:
                    bold = r[col + 1].startswith(r"\textbf{")
                    value = float(re.match(r"(?:\\textbf\{)?([\d.]+)", r[col + 1]).group(1))
                    assert value == pytest.approx(expected[r[0]][col], abs=0.0051)
                    assert bold == (f"{value:.2f}" == f"{best:.2f}"), (d, col, r)
            assert all(r"{\scriptsize$\pm$" in r[1] for r in rows)  # two seeds: the std follows the mean
        avg = tables[rf"Base-to-novel $\cdot$ {backbone} $\cdot$ 16 shots --- Average"][1:]
        for col in range(2):
            column = {r[0]: leading_number(re.sub(r"\\textbf\{([^}]*)\}", r"\1", r[col + 1])) for r in avg}
            expected = {m: np.mean([means[m][d][col] for d in DATASETS]) for m in METHODS}
            assert column == {m: pytest.approx(v, abs=0.0051) for m, v in expected.items()}
            winner = max(expected, key=expected.get)
            assert next(r for r in avg if r[0] == winner)[col + 1].startswith(r"\textbf{")


def test_latex_published_rows_are_italic_under_their_own_rule_and_count_for_bold(filled_db, tmp_path):
    path, _ = filled_db
    out = tmp_path / "tex"
    result = CliRunner().invoke(
        results_cli.app, ["report", "--db", str(path), "-f", "latex", "-p", "b2n", "-b", "ViT-B/16", "--out", out]
    )
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"wrote {out / 'report.tex'}"
    tables, rules = latex_tables((out / "report.tex").read_text())
    caption = r"Base-to-novel $\cdot$ ViT-B/16 $\cdot$ 16 shots --- Average"
    assert rules[caption] == [r"\toprule", r"\midrule", r"\midrule", r"\bottomrule"]
    published = [r for r in tables[caption][1:] if r[0].startswith(r"\textit{")]
    assert published  # the packaged published averages
    values = [[leading_number(re.sub(r"\\textbf\{([^}]*)\}", r"\1", c)) for c in r[1:]] for r in tables[caption][1:]]
    for col in range(3):
        best = max(v[col] for v in values)
        for r, v in zip(tables[caption][1:], values, strict=True):
            assert r[col + 1].startswith(r"\textbf{") == (v[col] == best)


def test_escape_turns_the_report_symbols_into_latex():
    assert escape("coop [optim.lr=0.01] 5% & #1_x") == r"coop [optim.lr=0.01] 5\% \& \#1\_x"
    assert escape("81.20 ± 0.35 †") == r"81.20 $\pm$ 0.35 $^\dagger$"
    assert leading_number("81.20 ± 0.35 (n=1)") == 81.2 and leading_number("–") is None


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex is not installed")
def test_latex_report_compiles(filled_db, tmp_path):
    path, _ = filled_db
    result = CliRunner().invoke(results_cli.app, ["report", "--db", str(path), "-f", "latex", "--out", tmp_path])
    assert result.exit_code == 0, result.output
    run = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "report.tex"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout[-3000:]
