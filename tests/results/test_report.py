"""`restore report`: the numbers in the terminal, Markdown and HTML outputs equal a recomputation from the
inserted metrics; published rows only where protocol and backbone match; clear errors."""

from __future__ import annotations

import base64
import io
import json
import re
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import restore.cli
import restore.results.results_commands as results_cli
from restore.errors import ResultsError
from restore.results.published import PUBLISHED_LABEL, load_published
from tests.helpers import shared_data

from .conftest import DATASETS, METHODS

runner = CliRunner()
WIDE = {"COLUMNS": "400", "NO_COLOR": "1"}


def invoke(*args):
    return runner.invoke(results_cli.app, [str(a) for a in args], env=WIDE)


def hm(b, n):
    return 2 * b * n / (b + n)


def expected_table(numbers, backbone):
    """Recompute the paper-style table from the inserted metrics: rows method -> formatted cells in report order
    (Average Base/Novel/HM, then per dataset Base/Novel/HM)."""
    rows = {}
    for method in METHODS:
        cells, base_means, novel_means = [], [], []
        for dataset in DATASETS:
            b = np.array([v[0] for v in numbers[backbone][method][dataset].values()])
            n = np.array([v[1] for v in numbers[backbone][method][dataset].values()])
            cells += [
                f"{b.mean():.2f} ± {b.std(ddof=1):.2f}",
                f"{n.mean():.2f} ± {n.std(ddof=1):.2f}",
                f"{hm(b.mean(), n.mean()):.2f}",
            ]
            base_means.append(b.mean())
            novel_means.append(n.mean())
        ab, an = np.mean(base_means), np.mean(novel_means)
        rows[method] = [f"{ab:.2f}", f"{an:.2f}", f"{hm(ab, an):.2f}", *cells]
    return rows


def markdown_tables(text):
    """{section title: [[cells...] per row]} from the report's Markdown. A section printed as per-dataset blocks
    (`### Average`, `### dtd`, each with Base/Novel/HM) is joined back into one wide table, its header cells
    named `<block> <column>`, so the numbers can be compared with one recomputation."""
    sections: dict = {}
    title = block = None
    for line in text.splitlines():
        if line.startswith("## "):
            title, block = line[3:], ""
            sections[title] = {}
        elif line.startswith("### ") and title:
            block = line[4:]
        elif line.startswith("| ") and title:
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
            sections[title].setdefault(block, []).append(cells)
    tables = {}
    for title, by_block in sections.items():
        if list(by_block) == [""]:
            tables[title] = by_block[""]
            continue
        header, rows = ["Method"], {}
        for name, lines in by_block.items():
            header += [f"{name} {c}" for c in lines[0][1:]]
            for cells in lines[1:]:
                rows.setdefault(cells[0], []).extend(cells[1:])
        tables[title] = [header, *([label, *cells] for label, cells in rows.items())]
    return tables


class _Tables(HTMLParser):
    def __init__(self):
        super().__init__()
        self.sections, self.title, self.cell, self.row = {}, None, None, None
        self.in_h2 = False
        self.imgs, self.scripts, self.links = [], 0, []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "h2":
            self.in_h2, self.title = True, ""
        elif tag == "tr":
            self.row = [attrs.get("class", "")]
        elif tag in ("td", "th"):
            self.cell = ""
        elif tag == "img":
            self.imgs.append(attrs["src"])
        elif tag == "script":
            self.scripts += 1
        for key in ("src", "href"):
            if key in attrs:
                self.links.append(attrs[key])

    def handle_endtag(self, tag):
        if tag == "h2":
            self.in_h2 = False
            self.sections[self.title] = []
        elif tag in ("td", "th"):
            self.row.append(self.cell)
            self.cell = None
        elif tag == "tr":
            self.sections[self.title].append(self.row)

    def handle_data(self, data):
        if self.in_h2:
            self.title += data
        elif self.cell is not None:
            self.cell += data


def check_rows(rows, expected, published):
    """rows: label + cells; our rows equal the recomputation, published rows carry the file's numbers."""
    ours = {r[0].strip("*"): r[1:] for r in rows if r[0].strip("*") in METHODS}
    assert ours == expected
    pub = {r[0].strip("*"): r[1:] for r in rows if PUBLISHED_LABEL in r[0]}
    if published is None:
        assert pub == {}
        return
    assert set(pub) == {f"{m} — {PUBLISHED_LABEL}" for m in published.averages}
    for method, (b, n, h) in published.averages.items():
        cells = pub[f"{method} — {PUBLISHED_LABEL}"]
        assert cells[:3] == [f"{b:.2f}", f"{n:.2f}", f"{h:.2f}"]
        assert all(c == "" for c in cells[3:])  # never in a dataset column


def test_markdown_and_html_reports_equal_the_recomputation(filled_db, tmp_path):
    path, numbers = filled_db
    published_file = shared_data("published_base_to_novel.json")
    published = load_published(published_file)
    out = tmp_path / "report"
    result = invoke("report", "--db", path, "--out", out, "--published", published_file)
    assert result.exit_code == 0, result.output
    assert f"wrote {out / 'report.md'}" in result.output and f"wrote {out / 'report.html'}" in result.output

    md = (out / "report.md").read_text()
    tables = markdown_tables(md)
    vit, tiny = "Base-to-novel · ViT-B/16 · 16 shots", "Base-to-novel · tiny · 16 shots"
    xd = "Cross-dataset · source imagenet · ViT-B/16 · 16 shots"
    assert list(tables) == [vit, tiny, xd]
    header = tables[vit][0]
    assert header[:4] == ["Method", "Average Base", "Average Novel", "Average HM"]
    assert header[4:7] == ["dtd Base", "dtd Novel", "dtd HM"]
    check_rows(tables[vit][1:], expected_table(numbers, "ViT-B/16"), published)
    check_rows(tables[tiny][1:], expected_table(numbers, "tiny"), None)  # published rows only for ViT-B/16
    assert len(tables[xd]) == 2  # header and coop: no published rows outside base-to-novel
    assert tables[xd][0] == ["Method", "imagenet (source)", "dtd", "eurosat", "Average"]
    assert tables[xd][1] == ["**coop**", "71.50 ± 0.71", "41.50 ± 0.71", "45.00 ± 0.00", "43.25"]
    assert md.count("HM is the harmonic mean of the mean Base and mean Novel") == 2
    assert "Not included (not finished): 1 failed." in md
    for link in re.findall(r"!\[[^]]*\]\(([^)]+)\)", md):
        png = (out / link).read_bytes()
        assert png.startswith(b"\x89PNG") and np.asarray(Image.open(io.BytesIO(png)).convert("L")).std() > 5
    assert "plots/b2n-vit-b-16-16-shift.png" in md  # maple has shift curves

    page = (out / "report.html").read_text()
    parser = _Tables()
    parser.feed(page)
    assert list(parser.sections) == [vit, tiny, xd]

    def body(rows):
        """Each row's cells over the per-dataset blocks (Average, dtd, eurosat), joined in block order."""
        joined: dict = {}
        for r in rows:
            if r[0] in ("", "published") and r[1] != "Method":
                joined.setdefault(r[1], [r[0], r[1]]).extend(r[2:])
        return [cells[1:] for cells in joined.values()]

    check_rows(body(parser.sections[vit]), expected_table(numbers, "ViT-B/16"), published)
    check_rows(body(parser.sections[tiny]), expected_table(numbers, "tiny"), None)
    assert page.count("HM is the harmonic mean of the mean Base and mean Novel") == 2
    # Self-contained: no scripts, every resource inline.
    assert parser.scripts == 0
    assert parser.links and all(link.startswith("data:image/png;base64,") for link in parser.links)
    assert len(parser.imgs) == 5  # bars + shift for ViT-B/16 and tiny, bars for xd
    for src in parser.imgs:
        img = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
        assert img.size[0] > 300 and np.asarray(img.convert("L")).std() > 5


def test_terminal_table_shows_the_same_numbers_and_the_hm_footnote(filled_db):
    path, numbers = filled_db
    result = invoke("report", "--db", path, "--protocol", "b2n", "--backbone", "tiny")
    assert result.exit_code == 0, result.output
    for method, cells in expected_table(numbers, "tiny").items():
        line = next(l for l in result.output.splitlines() if re.match(rf"[│|]\s*{method}\s*[│|]", l))
        assert [c.strip() for c in line.strip("│| ").split("│")][1:] == cells
    assert "HM is the harmonic mean of the mean Base and mean Novel" in result.output
    assert "Cross-dataset" not in result.output and PUBLISHED_LABEL not in result.output


def test_markdown_goes_to_stdout_without_out(filled_db):
    path, numbers = filled_db
    result = invoke("report", "--db", path, "-f", "markdown", "--no-published", "--dataset", "dtd", "-p", "b2n")
    assert result.exit_code == 0, result.output
    tables = markdown_tables(result.output)
    assert list(tables) == ["Base-to-novel · ViT-B/16 · 16 shots", "Base-to-novel · tiny · 16 shots"]
    row = next(r for r in tables["Base-to-novel · ViT-B/16 · 16 shots"] if r[0] == "**coop**")
    assert row[4:] == expected_table(numbers, "ViT-B/16")["coop"][3:6]
    assert PUBLISHED_LABEL not in result.output
    assert "Filters: protocol = b2n, dataset = dtd." in result.output


def test_a_missing_default_published_file_is_a_note_not_an_error(filled_db, tmp_path, monkeypatch):
    path, _ = filled_db
    monkeypatch.setattr(results_cli, "default_published_path", lambda: tmp_path / "absent.json")
    result = invoke("report", "--db", path, "-f", "markdown", "-p", "b2n")
    assert result.exit_code == 0, result.output
    assert f"Published numbers not found at {tmp_path / 'absent.json'}" in result.output
    assert PUBLISHED_LABEL not in result.output.split("Published numbers not found")[1]


def test_a_malformed_published_file_is_a_clear_error(filled_db, tmp_path):
    path, _ = filled_db
    bad = tmp_path / "published.json"
    bad.write_text(
        json.dumps(
            {"protocol": "base-to-novel", "backbone": "ViT-B/16", "average_over_11_datasets": {"coop": {"base": 1}}}
        )
    )
    result = invoke("report", "--db", path, "--published", bad)
    assert isinstance(result.exception, ResultsError)
    assert "method 'coop' lacks numeric base/novel/hm" in str(result.exception)
    result = invoke("report", "--db", path, "--published", tmp_path / "nope.json")
    assert "published numbers file" in str(result.exception) and "does not exist" in str(result.exception)


@pytest.fixture
def restore_main(monkeypatch):
    """The real `restore` entry point with this package mounted as the maintainer will mount it."""
    app = restore.cli.app
    monkeypatch.setattr(app, "registered_groups", list(app.registered_groups))
    monkeypatch.setattr(app, "registered_commands", list(app.registered_commands))
    app.add_typer(results_cli.app, name="results")
    app.command("report")(results_cli.report)
    return restore.cli.main


def test_errors_through_the_real_entry_point_are_one_clear_message(restore_main, filled_db, tmp_path, capsys):
    path, _ = filled_db
    assert restore_main(["report", "--db", str(tmp_path / "typo.sqlite")]) == 2
    err = capsys.readouterr().err
    assert f"error: no results database at {tmp_path / 'typo.sqlite'}" in err and "hint:" in err
    assert "Traceback" not in err and not (tmp_path / "typo.sqlite").exists()

    assert restore_main(["report", "--db", str(path), "--method", "nope"]) == 2
    assert "error: no finished runs to report" in capsys.readouterr().err

    assert restore_main(["report", "--db", str(path), "-f", "markdown", "-f", "html"]) == 2
    assert "cannot all go to the terminal" in capsys.readouterr().err

    assert restore_main(["report", "--db", str(path), "-f", "table", "--out", str(tmp_path / "o")]) == 2
    assert "--out writes Markdown, HTML or LaTeX files" in capsys.readouterr().err

    assert restore_main(["report", "--db", str(path), "--protocol", "b2m"]) == 2
    err = re.sub(r"[\s│╭╮╰╯─]+", " ", capsys.readouterr().err)
    assert "'b2m' is not one of 'b2n', 'xd', 'dg', 'fewshot', 'train'" in err

    assert restore_main(["results", "show", "nope", "--db", str(path)]) == 2
    assert "error: no run 'nope'" in capsys.readouterr().err


def test_runs_show_and_mark_interrupted_commands(filled_db):
    path, _ = filled_db
    result = invoke("runs", "--db", path, "--json", "--status", "failed")
    assert result.exit_code == 0, result.output
    (line,) = result.output.splitlines()
    failed = json.loads(line)
    assert (failed["status"], failed["error"], failed["seed"]) == ("failed", "loss became NaN", 9)

    result = invoke("runs", "--db", path, "--method", "maple", "--backbone", "tiny")
    assert result.exit_code == 0 and "4 runs" in result.output and "HM" in result.output

    result = invoke("show", failed["run_id"], "--db", path)
    assert json.loads(result.output) == failed

    result = invoke("mark-interrupted", "--db", path)
    assert result.exit_code == 0 and "0 run(s) marked interrupted" in result.output


def test_build_report_refuses_an_empty_selection():
    from restore.results.report import build_report

    with pytest.raises(ResultsError, match="no finished runs to report"):
        build_report([])


def test_format_values_are_checked_by_the_cli(filled_db):
    path, _ = filled_db
    result = invoke("report", "--db", path, "--format", "pdf")
    assert result.exit_code == 2
    assert "'pdf' is not one of 'table', 'markdown', 'html'" in re.sub(r"[\s│╭╮╰╯─]+", " ", result.output)


def test_a_narrow_terminal_gets_one_row_per_method_and_dataset_with_the_same_numbers(filled_db):
    from rich.console import Console

    from restore.results import open_results
    from restore.results.report import build_report, render_terminal

    path, _ = filled_db
    with open_results(path, create=False) as store:
        report = build_report(store.query(protocol="b2n", backbone="tiny"), with_plots=False)
    (section,) = report.sections
    wide, narrow = io.StringIO(), io.StringIO()
    render_terminal(report, Console(file=wide, width=400))
    render_terminal(report, Console(file=narrow, width=60))
    assert "dtd\nBase" not in narrow.getvalue() and max(map(len, narrow.getvalue().splitlines())) <= 80
    for row in section.grid.rows:
        for k, (group, _) in enumerate(section.grid.groups):
            cells = row.cells[3 * k : 3 * k + 3]
            line = next(
                l for l in narrow.getvalue().splitlines() if re.search(rf"[│|]\s*{re.escape(group)}\s*[│|]", l)
                and all(c in l for c in cells)
            )  # fmt: skip
            assert line
        wide_line = next(l for l in wide.getvalue().splitlines() if re.match(rf"[│|]\s*{row.label}\s*[│|]", l))
        assert [c.strip() for c in wide_line.strip("│| ").split("│")][1:] == row.cells


@pytest.mark.parametrize("width", [60, 400])
def test_a_tagged_variant_keeps_its_tag_in_the_terminal_table(store, width):
    from rich.console import Console

    from restore.results.report import build_report, render_terminal

    from .conftest import record_run

    for tag in ("", "method.n_ctx=2"):
        for dataset in DATASETS:
            record_run(store, method="coop", dataset=dataset, seed=1, tag=tag,
                       metrics={"base": {"top1": 70.0}, "novel": {"top1": 60.0}})  # fmt: skip
    out = io.StringIO()
    render_terminal(build_report(store.query(), with_plots=False), Console(file=out, width=width))
    text = re.sub(r"[│|\s]+", " ", out.getvalue())
    assert text.count("[method.n_ctx=2]") == 1  # rich would read it as markup and drop it


def test_footnotes_that_name_settings_in_brackets_are_printed_as_written(store):
    """The grouping footnote says '[key=value] lists the settings…': rich must not take it for markup."""
    from rich.console import Console

    from restore.results.report import build_report, render_terminal

    from .conftest import record_run

    for tag in ("", "fast"):
        record_run(store, method="coop", dataset=DATASETS[0], seed=1, tag=tag,
                   metrics={"base": {"top1": 70.0}, "novel": {"top1": 60.0}})  # fmt: skip
    report = build_report(store.query(), with_plots=False)
    out = io.StringIO()
    render_terminal(report, Console(file=out, width=400))
    notes = [n for s in report.sections for n in s.footnotes if "[" in n]
    assert notes, "expected a footnote that names a setting in brackets"
    text = out.getvalue()
    for note in notes:
        assert note in text
