"""Published base-to-novel numbers of the literature, shown beside ours in their own, labelled rows.

They are never mixed into our means: a report adds them as extra rows of the base-to-novel table whose
backbone matches the file's (ViT-B/16), and only in the Average column (the file holds 11-dataset averages).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

from restore.errors import ResultsError
from restore.results.aggregate import B2NRow, B2NTable
from restore.results.records import harmonic_mean

PUBLISHED_LABEL = "published (MaPLe/PromptSRC READMEs)"
FILENAME = "published_base_to_novel.json"
_PROTOCOL_NAMES = {"base-to-novel": "b2n", "b2n": "b2n"}


@dataclass(frozen=True)
class Published:
    path: Path
    protocol: str
    backbone: str
    description: str
    n_datasets: int | None
    averages: dict[str, tuple[float, float, float]]  # method -> (base, novel, hm) as published


def default_published_path() -> Path:
    """`../shared/data/published_base_to_novel.json` beside the repository this package runs from."""
    return Path(__file__).resolve().parents[3].parent / "shared" / "data" / FILENAME


def load_published(path: str | Path) -> Published:
    """Read and check the file; anything malformed is a ResultsError naming what is wrong."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ResultsError(f"published numbers file {path} does not exist", hint="check --published") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ResultsError(f"cannot read published numbers from {path}: {e}") from None

    def bad(what: str) -> ResultsError:
        return ResultsError(
            f"published numbers file {path}: {what}",
            hint='expected {"protocol": "base-to-novel", "backbone": "ViT-B/16", '
            '"average_over_N_datasets": {"coop": {"base": .., "novel": .., "hm": ..}, ...}}',
        )

    if not isinstance(data, dict):
        raise bad("the top level is not an object")
    protocol = _PROTOCOL_NAMES.get(str(data.get("protocol", "")).lower())
    if protocol is None:
        raise bad(f"unknown protocol {data.get('protocol')!r}")
    backbone = data.get("backbone")
    if not isinstance(backbone, str) or not backbone:
        raise bad("no backbone")
    keys = [k for k in data if k.startswith("average_over")]
    if len(keys) != 1 or not isinstance(data[keys[0]], dict):
        raise bad("expected exactly one 'average_over_..._datasets' object")
    match = re.search(r"(\d+)", keys[0])
    averages = {}
    for method, entry in data[keys[0]].items():
        try:
            values = tuple(float(entry[k]) for k in ("base", "novel", "hm"))
        except (TypeError, KeyError, ValueError):
            raise bad(f"method {method!r} lacks numeric base/novel/hm") from None
        if not all(math.isfinite(v) and 0 <= v <= 100 for v in values):
            raise bad(f"method {method!r} has a value outside [0, 100]")
        averages[method] = values
    return Published(
        path=path,
        protocol=protocol,
        backbone=backbone,
        description=str(data.get("description", "")),
        n_datasets=int(match.group(1)) if match else None,
        averages=averages,
    )


def applies_to(published: Published, table: object) -> bool:
    """Published rows go into base-to-novel tables of the same backbone, and nowhere else."""
    return isinstance(table, B2NTable) and table.protocol == published.protocol and table.backbone == published.backbone


def published_rows(published: Published) -> tuple[tuple[B2NRow, ...], tuple[str, ...]]:
    """Rows labelled as published (Average column only) and the footnotes that go with them."""
    rows = tuple(
        B2NRow(label=method, cells={}, average=values, n_datasets=published.n_datasets or 0, published=True)
        for method, values in published.averages.items()
    )
    over = f"{published.n_datasets} datasets" if published.n_datasets else "the datasets of the literature"
    notes = [
        f"Rows marked “{PUBLISHED_LABEL}” are published numbers, not our runs: averages over {over} "
        f"({published.backbone}), shown in the Average column only and never part of our means. "
        f"Source: {published.path.name}. {published.description}".strip(),
    ]
    off = [m for m, (b, n, h) in published.averages.items() if abs(harmonic_mean(b, n) - h) > 0.02]
    if off:
        notes.append(f"Published HM differs from HM(base, novel) by rounding for: {', '.join(off)}.")
    return rows, tuple(notes)
