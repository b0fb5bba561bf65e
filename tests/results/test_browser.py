"""The HTML report opens in headless Chromium without console errors, shows the table, and is not blank."""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from restore.results import open_results
from restore.results.published import PUBLISHED_LABEL, load_published
from restore.results.report import build_report, write_report
from tests.helpers import shared_data

from .test_report import expected_table

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary on PATH (Debian: apt-get install -y chromium)"),
]
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--no-first-run",
    "--disable-component-update",
    "--enable-logging=stderr",
    "--v=0",
]


def chromium(tmp_path, *args):
    return subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}", *args],
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_html_report_renders_in_headless_chromium(filled_db, tmp_path):
    path, numbers = filled_db
    with open_results(path, create=False) as store:
        records = store.query()
    report = build_report(
        records, source=str(path), published=load_published(shared_data("published_base_to_novel.json"))
    )
    (page,) = write_report(report, tmp_path / "out", ["html"])
    url = page.resolve().as_uri()

    shot = tmp_path / "shot.png"
    run = chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,2000", url)
    assert run.returncode == 0, run.stderr[-2000:]
    console = [line for line in run.stderr.splitlines() if ":CONSOLE" in line]
    assert console == []  # no script errors, no failed resource loads
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.shape == (2000, 1280)
    assert pixels.std() > 20  # not a blank page
    assert (pixels < 128).mean() > 0.01  # text, table rules and bars drawn in dark ink

    dom = chromium(tmp_path, "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert dom.stdout.count("<table") == 7  # Average, dtd, eurosat blocks for both backbones; one xd table
    cells = re.findall(r"<td[^>]*>([^<]*)</td>", dom.stdout)
    for row in expected_table(numbers, "ViT-B/16").values():
        text = [c.replace("&nbsp;", " ") for c in cells]
        assert all(value in text for value in row)
    assert PUBLISHED_LABEL in dom.stdout
    assert dom.stdout.count('src="data:image/png;base64,') == 5
