"""Published base-to-novel numbers of the literature, shown beside ours in their own, labelled rows.

They are never mixed into our means: a report adds them as extra rows of the base-to-novel table whose
backbone matches the file's (ViT-B/16): the 11-dataset average in the Average block, and a dataset's own numbers
in that dataset's block where the file has them. The package ships them
(`restore/results/published/base_to_novel_vit_b16.json`, every method with its source: paper or release and
table); `--published FILE` reads another file in the same layout, or the older `average_over_N_datasets` one.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from restore.errors import ResultsError
from restore.results.aggregate import B2NCell, B2NRow, B2NTable, Stat, norm_name
from restore.results.records import harmonic_mean

PUBLISHED_LABEL = "as published"
FILENAME = "base_to_novel_vit_b16.json"
_PROTOCOL_NAMES = {"base-to-novel": "b2n", "b2n": "b2n"}
Triple = tuple[float, float, float]


@dataclass(frozen=True)
class Published:
    path: Path
    protocol: str
    backbone: str
    description: str
    n_datasets: int | None
    averages: dict[str, Triple]  # method -> (base, novel, hm) as published
    datasets: dict[str, dict[str, Triple]] = field(default_factory=dict)  # method -> dataset -> (b, n, hm)
    sources: dict[str, str] = field(default_factory=dict)  # method -> where its numbers are printed


def default_published_path() -> Path:
    """The published numbers that ship with the package (found through importlib.resources)."""
    return Path(str(resources.files("restore.results").joinpath("published", FILENAME)))


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
            hint='expected {"protocol": "base-to-novel", "backbone": "ViT-B/16", "methods": {"coop": {"average": '
            '{"base": .., "novel": .., "hm": ..}, "datasets": {"dtd": {...}}, "source": "paper, table"}}}',
        )

    def triple(method: str, entry: object, where: str = "") -> Triple:
        try:
            values = tuple(float(entry[k]) for k in ("base", "novel", "hm"))  # type: ignore[index]
        except (TypeError, KeyError, ValueError):
            raise bad(f"method {method!r}{where} lacks numeric base/novel/hm") from None
        if not all(math.isfinite(v) and 0 <= v <= 100 for v in values):
            raise bad(f"method {method!r}{where} has a value outside [0, 100]")
        return values  # type: ignore[return-value]

    if not isinstance(data, dict):
        raise bad("the top level is not an object")
    protocol = _PROTOCOL_NAMES.get(str(data.get("protocol", "")).lower())
    if protocol is None:
        raise bad(f"unknown protocol {data.get('protocol')!r}")
    backbone = data.get("backbone")
    if not isinstance(backbone, str) or not backbone:
        raise bad("no backbone")
    averages: dict[str, Triple] = {}
    per_dataset: dict[str, dict[str, Triple]] = {}
    sources: dict[str, str] = {}
    if isinstance(data.get("methods"), dict):
        n = data.get("n_datasets")
        n_datasets = n if isinstance(n, int) and not isinstance(n, bool) else None
        for method, entry in data["methods"].items():
            if not isinstance(entry, dict):
                raise bad(f"method {method!r} is not an object")
            source = entry.get("source")
            if not isinstance(source, str) or not source.strip():
                raise bad(f"method {method!r} names no source (every published number needs one)")
            sources[method] = source
            if "average" in entry:
                averages[method] = triple(method, entry["average"])
            sets = entry.get("datasets", {})
            if not isinstance(sets, dict):
                raise bad(f"method {method!r}: 'datasets' is not an object")
            per_dataset[method] = {d: triple(method, v, f" on {d!r}") for d, v in sets.items()}
    else:
        keys = [k for k in data if k.startswith("average_over")]
        if len(keys) != 1 or not isinstance(data[keys[0]], dict):
            raise bad("expected a 'methods' object, or exactly one 'average_over_..._datasets' object")
        match = re.search(r"(\d+)", keys[0])
        n_datasets = int(match.group(1)) if match else None
        averages = {method: triple(method, entry) for method, entry in data[keys[0]].items()}
    return Published(
        path=path,
        protocol=protocol,
        backbone=backbone,
        description=str(data.get("description", "")),
        n_datasets=n_datasets,
        averages=averages,
        datasets={m: d for m, d in per_dataset.items() if d},
        sources=sources,
    )


def applies_to(published: Published, table: object) -> bool:
    """Published rows go into base-to-novel tables of the same backbone, and nowhere else."""
    return isinstance(table, B2NTable) and table.protocol == published.protocol and table.backbone == published.backbone


def _cell(values: Triple) -> B2NCell:
    return B2NCell(Stat(values[0], None, ()), Stat(values[1], None, ()))


def published_rows(published: Published, datasets: tuple[str, ...] = ()) -> tuple[tuple[B2NRow, ...], tuple[str, ...]]:
    """Rows labelled as published, with the average and each of `datasets` the file has numbers for (names
    compared loosely: `DTD`, `dtd`), and the footnotes that go with them (each method's source)."""
    rows = []
    for method in dict.fromkeys([*published.averages, *published.datasets]):
        own = {norm_name(d): v for d, v in published.datasets.get(method, {}).items()}
        cells = {d: _cell(own[norm_name(d)]) for d in datasets if norm_name(d) in own}
        rows.append(
            B2NRow(
                label=method,
                cells=cells,
                average=published.averages.get(method),
                n_datasets=published.n_datasets or 0,
                published=True,
            )
        )
    over = f"{published.n_datasets} datasets" if published.n_datasets else "the datasets of the literature"
    shown = "the Average block and the datasets the source gives" if published.datasets else "the Average block"
    notes = [
        f"Rows marked “{PUBLISHED_LABEL}” are published numbers, not our runs: averages over {over} "
        f"({published.backbone}), shown in {shown} and never part of our means. "
        f"Source: {published.path.name}. {published.description}".strip(),
    ]
    if published.sources:
        notes.append("Sources: " + "; ".join(f"{m}: {s}" for m, s in published.sources.items()) + ".")
    off = [m for m, (b, n, h) in published.averages.items() if abs(harmonic_mean(b, n) - h) > 0.02]
    if off:
        notes.append(f"Published HM differs from HM(base, novel) by rounding for: {', '.join(off)}.")
    return tuple(rows), tuple(notes)
