"""Few-shot sampling that reproduces the CoOp family's training sets, so results compare with published ones.

The procedure (Dassl's `generate_fewshot_dataset`, as CoOp, CoCoOp, MaPLe, PromptSRC and RESTORE call it):
seed Python's `random` with the run seed; group the train list (split-file order) by label, labels in order of
first appearance; per label `random.sample(items, shots)`; then the same on the val list with `min(shots, 4)`.
A private `random.Random(seed)` draws exactly the numbers the seeded module-level generator would, without
touching global state. Results are cached as JSON per dataset/shots/seed; the cache is keyed by a fingerprint
of the lists it was drawn from, so a changed split file (or a `present`-mode subset) never reuses a stale set.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from restore.data.registry import get_dataset
from restore.data.types import DatasetSplits, Datum
from restore.errors import ConfigError, DataError

CACHE_FORMAT = "restore-fewshot-v1"


def default_cache_root() -> Path:
    return Path(os.environ.get("RESTORE_CACHE") or Path.home() / ".cache" / "restore").expanduser()


def default_cache_dir() -> Path:
    return default_cache_root() / "splits"


def sample_per_label(
    items: list[Datum], shots: int, rng: random.Random, *, repeat_short: bool = False
) -> tuple[list[Datum], list[tuple[int, int]]]:
    """`shots` items per label (labels in first-appearance order); also returns (label, available) of short ones.

    A label with fewer items than `shots` gives all of them (no draw), or with `repeat_short` draws `shots`
    with replacement via `random.choices` (Dassl's default `repeat=True`, kept to reproduce it exactly).
    """
    groups: dict[int, list[Datum]] = defaultdict(list)
    for d in items:
        groups[d.label].append(d)
    out: list[Datum] = []
    short: list[tuple[int, int]] = []
    for label, group in groups.items():
        if len(group) >= shots:
            out.extend(rng.sample(group, shots))
        else:
            short.append((label, len(group)))
            out.extend(rng.choices(group, k=shots) if repeat_short else group)
    return out, short


def few_shot(
    splits: DatasetSplits,
    shots: int,
    seed: int,
    *,
    cache_dir: Path | None = None,
    cache: bool = True,
    strict: bool = False,
    repeat_short: bool = False,
    fewshot_val: bool | None = None,
) -> DatasetSplits:
    """The `shots`-per-class training set (and val with min(shots, 4)) for `seed`; shots -1 or 0 keeps all.

    `strict`: a class with fewer than `shots` training images is an error instead of a note.
    `fewshot_val`: subsample val too (default: the dataset's registry setting; False for ImageNet, whose val is
    its test set, as in CoOp).
    """
    if not isinstance(shots, int) or isinstance(shots, bool) or shots < -1:
        raise ConfigError(f"shots must be a positive integer, or -1/0 for all images; got {shots!r}")
    if shots <= 0:
        return splits
    if fewshot_val is None:
        fewshot_val = _registry_fewshot_val(splits.name)
    if strict:
        _check_strict(splits, shots)
    key = _fingerprint(splits, repeat_short, fewshot_val)
    path = (cache_dir or default_cache_dir()) / _slug(splits.name) / f"shot_{shots}-seed_{seed}-{key}.json"
    if cache and path.is_file():
        cached = _read_cache(path, splits)
        if cached is not None:
            train, val, notes = cached
            return splits.with_lists(train=train, val=val, note="; ".join(notes))

    rng = random.Random(seed)
    train, short = sample_per_label(splits.train, shots, rng, repeat_short=repeat_short)
    val, short_val = splits.val, []
    if fewshot_val:
        val, short_val = sample_per_label(splits.val, min(shots, 4), rng, repeat_short=repeat_short)
    notes = [f"few-shot: {shots} shots per class, seed {seed}: train {len(train)}, val {len(val)}"]
    if short:
        how = "drawn with replacement" if repeat_short else "all taken"
        notes.append(
            f"few-shot: {len(short)} classes have fewer than {shots} training images ({how}): "
            + ", ".join(f"{splits.classnames[y]} ({n})" for y, n in short[:10])
            + (" ..." if len(short) > 10 else "")
        )
    if short_val:
        notes.append(f"few-shot: {len(short_val)} classes have fewer than {min(shots, 4)} val images")
    if cache:
        _write_cache(path, splits, shots, seed, key, train, val if fewshot_val else None, notes)
    return splits.with_lists(train=train, val=val, note="; ".join(notes))


def _check_strict(splits: DatasetSplits, shots: int) -> None:
    counts = Counter(d.label for d in splits.train)
    short = [(y, n) for y, n in counts.items() if n < shots]
    if short:
        raise DataError(
            f"{splits.name}: {len(short)} classes have fewer than {shots} training images: "
            + ", ".join(f"{splits.classnames[y]} ({n})" for y, n in short[:10]),
            hint="lower the number of shots, or drop strict to take all images of those classes (CoOp's choice)",
        )


def _registry_fewshot_val(name: str) -> bool:
    try:
        return get_dataset(name).fewshot_val
    except ConfigError:
        return True


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "dataset"


def _relativiser(root: Path | None):
    """d -> its path relative to `root` in POSIX form (absolute when outside). String prefix work: pathlib's
    relative_to costs ~50 µs, which is a minute over ImageNet's 1.28M images."""
    prefix = None if root is None else str(root).rstrip(os.sep) + os.sep

    def rel(d: Datum) -> str:
        text = str(d.path)
        if prefix is not None and text.startswith(prefix):
            text = text[len(prefix) :]
            return text.replace(os.sep, "/") if os.sep != "/" else text
        return text

    return rel


def _fingerprint(splits: DatasetSplits, repeat_short: bool, fewshot_val: bool) -> str:
    h = hashlib.sha256(f"{CACHE_FORMAT}|{repeat_short}|{fewshot_val}|{splits.classnames!r}".encode())
    rel = _relativiser(splits.image_root)
    for part, items in (("train", splits.train), ("val", splits.val)):
        h.update(part.encode())
        h.update("".join(f"\0{rel(d)}\1{d.label}" for d in items).encode())
    return h.hexdigest()[:12]


def _write_cache(
    path: Path,
    splits: DatasetSplits,
    shots: int,
    seed: int,
    key: str,
    train: list[Datum],
    val: list[Datum] | None,
    notes: list[str],
) -> None:
    """`val` None: val was not subsampled (kept whole), so it is not stored."""
    rel = _relativiser(splits.image_root)
    payload: dict[str, Any] = {
        "format": CACHE_FORMAT,
        "dataset": splits.name,
        "shots": shots,
        "seed": seed,
        "fingerprint": key,
        "notes": notes,
        "train": [[rel(d), d.label, d.classname] for d in train],
        "val": None if val is None else [[rel(d), d.label, d.classname] for d in val],
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(payload))
        os.replace(tmp, path)
    except OSError:
        # A read-only cache only costs the resampling next time; the sampled set itself is unaffected.
        pass


def _read_cache(path: Path, splits: DatasetSplits) -> tuple[list[Datum], list[Datum] | None, list[str]] | None:
    """The cached lists mapped back onto `splits`' own Datum objects, or None when the file does not match or
    is damaged (not an object, wrong shapes, nested past the parser): the set is then drawn again and the
    file rewritten. A cache is never a reason for a run to fail."""
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT:
            return None
        if not isinstance(data.get("notes", []), list):
            return None
        out: list[list[Datum] | None] = []
        for part, pool in (("train", splits.train), ("val", splits.val)):
            if data[part] is None:
                out.append(None)
                continue
            rel = _relativiser(splits.image_root)
            index = {(rel(d), d.label): d for d in pool}
            out.append([index[(rel, label)] for rel, label, _ in data[part]])
        if out[0] is None:
            return None
        return out[0], out[1], [str(n) for n in data.get("notes", [])]
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
        return None
