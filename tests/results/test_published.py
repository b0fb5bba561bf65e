"""Published rows ship with the package, every number with its source, per dataset where the source gives it."""

from __future__ import annotations

import json
import tomllib
from importlib import resources
from pathlib import Path

import pytest
from typer.testing import CliRunner

import restore.results.results_commands as results_cli
from restore.errors import ResultsError
from restore.results.published import FILENAME, PUBLISHED_LABEL, default_published_path, load_published

WIDE = {"COLUMNS": "400", "NO_COLOR": "1"}


def invoke(*args):
    return CliRunner().invoke(results_cli.app, [str(a) for a in args], env=WIDE)


def test_the_packaged_file_loads_through_importlib_resources_and_every_method_names_its_source():
    packaged = resources.files("restore.results").joinpath("published", FILENAME)
    assert packaged.is_file()
    data = json.loads(packaged.read_text())
    pub = load_published(default_published_path())
    assert default_published_path().read_text() == packaged.read_text()
    assert (pub.protocol, pub.backbone, pub.n_datasets) == ("b2n", "ViT-B/16", 11)
    assert set(pub.averages) == set(data["methods"]) >= {"coop", "cocoop", "kgcoop", "maple", "promptsrc"}
    assert set(pub.sources) == set(pub.averages) and all("README" in s or "readme" in s for s in pub.sources.values())
    for method, (b, n, h) in pub.averages.items():
        assert h == pytest.approx(2 * b * n / (b + n), abs=0.02), method  # the published HM is HM(B, N)
    # Spot checks against the sources named in the file (PromptSRC README, KgCoOp readme.md).
    assert pub.averages["promptsrc"] == (84.26, 76.10, 79.97)
    assert pub.averages["kgcoop"] == (80.73, 73.6, 77.0)


def test_pyproject_packages_the_published_folder():
    """The package-data globs, expanded from the package folder as setuptools does, include the file."""
    repo = Path(__file__).resolve().parents[2]
    patterns = tomllib.loads((repo / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["restore"]
    package = repo / "src" / "restore"
    found = {path.relative_to(package).as_posix() for p in patterns for path in package.glob(p)}
    assert f"results/published/{FILENAME}" in found


def test_a_report_shows_the_packaged_rows_without_any_shared_folder(filled_db):
    path, _ = filled_db
    result = invoke("report", "--db", path, "-f", "markdown", "-p", "b2n", "-b", "ViT-B/16")
    assert result.exit_code == 0, result.output
    assert f"*promptsrc — {PUBLISHED_LABEL}* | 84.26 | 76.10 | 79.97 |" in result.output
    assert "kgcoop: KgCoOp (CVPR 2023) code release, readme.md" in result.output
    assert "not found" not in result.output


def test_per_dataset_published_numbers_go_into_their_dataset_block_only(filled_db, tmp_path):
    path, _ = filled_db
    custom = tmp_path / "pub.json"
    custom.write_text(
        json.dumps(
            {
                "protocol": "base-to-novel",
                "backbone": "ViT-B/16",
                "n_datasets": 11,
                "methods": {
                    "coop": {
                        "average": {"base": 80.0, "novel": 60.0, "hm": 68.57},
                        "datasets": {"DTD": {"base": 79.44, "novel": 41.18, "hm": 54.24}},
                        "source": "a paper, Table 1",
                    }
                },
            }
        )
    )
    result = invoke("report", "--db", path, "-f", "markdown", "-p", "b2n", "-b", "ViT-B/16", "--published", custom)
    assert result.exit_code == 0, result.output
    blocks = result.output.split("### ")
    dtd = next(b for b in blocks if b.startswith("dtd\n"))
    eurosat = next(b for b in blocks if b.startswith("eurosat\n"))
    assert f"| *coop — {PUBLISHED_LABEL}* | 79.44 | 41.18 | {2 * 79.44 * 41.18 / (79.44 + 41.18):.2f} |" in dtd
    assert f"— {PUBLISHED_LABEL}" not in eurosat.split("\n\n1. ")[0]  # the table, not the footnotes
    assert "Sources: coop: a paper, Table 1." in result.output


def test_a_published_method_without_a_source_is_refused(tmp_path):
    bad = tmp_path / "pub.json"
    bad.write_text(
        json.dumps(
            {
                "protocol": "b2n",
                "backbone": "ViT-B/16",
                "methods": {"coop": {"average": {"base": 1, "novel": 1, "hm": 1}}},
            }
        )
    )
    with pytest.raises(ResultsError, match="method 'coop' names no source"):
        load_published(bad)


# The 11 datasets of the base-to-novel benchmark, under the names the registry (and so every report) uses.
B2N_DATASETS = (
    "imagenet",
    "caltech101",
    "oxford_pets",
    "stanford_cars",
    "oxford_flowers",
    "food101",
    "fgvc_aircraft",
    "sun397",
    "dtd",
    "eurosat",
    "ucf101",
)


def _packaged_methods() -> dict:
    """The packaged JSON read directly, not through the loader, so the checks below are independent of it."""
    return json.loads(resources.files("restore.results").joinpath("published", FILENAME).read_text())["methods"]


def test_the_packaged_per_dataset_numbers_cover_the_eleven_registered_datasets_and_have_hm_of_base_and_novel():
    from restore.data import list_datasets

    methods = _packaged_methods()
    with_sets = {m for m, e in methods.items() if e.get("datasets")}
    assert with_sets == {"zeroshot_clip", "coop", "cocoop", "maple", "promptsrc", "tcp"}
    assert set(B2N_DATASETS) <= set(list_datasets())  # keys a report's dataset blocks are named by
    for method in sorted(with_sets):
        sets = methods[method]["datasets"]
        assert tuple(sets) == B2N_DATASETS, method
        assert "per-dataset" in methods[method]["source"], method  # the per-dataset numbers name their own source
        for dataset, v in sets.items():
            b, n, h = v["base"], v["novel"], v["hm"]
            assert h == pytest.approx(2 * b * n / (b + n), abs=0.02), (method, dataset)  # as published, rounded
    assert load_published(default_published_path()).datasets["coop"]["dtd"] == (79.44, 41.18, 54.24)


def test_the_mean_over_the_eleven_datasets_reproduces_each_published_average():
    for method, entry in _packaged_methods().items():
        if not entry.get("datasets"):
            continue
        sets, avg = entry["datasets"], entry["average"]
        base = sum(v["base"] for v in sets.values()) / len(sets)
        novel = sum(v["novel"] for v in sets.values()) / len(sets)
        assert len(sets) == 11
        assert base == pytest.approx(avg["base"], abs=0.05), method
        assert novel == pytest.approx(avg["novel"], abs=0.05), method
        assert 2 * base * novel / (base + novel) == pytest.approx(avg["hm"], abs=0.05), method


def test_a_report_shows_the_packaged_dataset_rows_in_each_dataset_block(filled_db):
    """filled_db holds coop and maple runs on dtd and eurosat: each block gets the published rows of that dataset."""
    path, _ = filled_db
    result = invoke("report", "--db", path, "-f", "markdown", "-p", "b2n", "-b", "ViT-B/16")
    assert result.exit_code == 0, result.output
    blocks = {b.split("\n", 1)[0]: b.split("\n\n1. ")[0] for b in result.output.split("### ")[1:]}
    methods = _packaged_methods()
    for dataset in ("dtd", "eurosat"):
        table = blocks[dataset]
        for method, entry in methods.items():
            row = f"| *{method} — {PUBLISHED_LABEL}* |"
            if dataset not in entry.get("datasets", {}):
                assert row not in table, (dataset, method)  # averages only: no row in a dataset block
                continue
            b, n = entry["datasets"][dataset]["base"], entry["datasets"][dataset]["novel"]
            assert f"{row} {b:.2f} | {n:.2f} | {2 * b * n / (b + n):.2f} |" in table, (dataset, method)
    assert "| *coop — as published* | 79.44 | 41.18 | 54.24 |" in blocks["dtd"]  # CoOp's DTD row, as printed
