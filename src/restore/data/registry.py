"""The dataset registry: how each dataset sits on disk, how to read it, and where to get it.

A dataset is a `DatasetSpec`. Most are "split-file datasets" (an image folder plus a CoOp-format JSON split file)
and need no code at all; the few with their own layout (FGVCAircraft's text files, ImageNet and its variants'
class folders) name a custom `reader`. Other parts of the project (the synthetic world) add their datasets with
`register_dataset` in the same format (out-of-tree ones through `restore.plugins`), and everything
downstream (few-shot, protocols, verify) works unchanged.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from restore import plugins
from restore.errors import ConfigError

if TYPE_CHECKING:
    from restore.data.folder import FolderSplit
    from restore.data.types import DatasetSplits

# reader(spec, dataset_dir, split_file) -> every entry the dataset lists, whether or not the file exists.
Reader = Callable[["DatasetSpec", Path, "Path | None"], "DatasetSplits"]


@dataclass(frozen=True)
class Resource:
    """One file to fetch for a dataset. Archives are extracted into `extract_to` (relative to the data root).

    `inner` names archives inside the extracted tree to extract in turn (Caltech101's zip holds a tar.gz);
    `move` renames extracted folders into place ((from, to), relative to the data root), e.g. FGVCAircraft's
    `fgvc-aircraft-2013b/data` -> `fgvc_aircraft`. A non-archive is saved as `save_as` (relative to the root).
    `creates` (relative to the root) is what the extracted archive provides: when it exists the resource is
    already in place and is not fetched again. `mirrors` are tried in order when `url` fails.
    """

    url: str
    filename: str
    md5: str | None = None
    sha256: str | None = None
    extract_to: str | None = None
    save_as: str | None = None
    inner: tuple[str, ...] = ()
    move: tuple[tuple[str, str], ...] = ()
    is_split_file: bool = False
    creates: str | None = None
    mirrors: tuple[str, ...] = ()


@dataclass(frozen=True)
class DatasetSpec:
    """Where a dataset lives under the data root and how to read it.

    `folder` is the dataset's folder under the root (CoOp's DATASETS.md names), `image_dir` the folder under it
    that split-file paths are relative to, `split_file` the split file's name inside `folder`.
    `files_listed`: the reader lists files from disk (so they exist by construction; no separate check).
    `fewshot_val`: few-shot sampling also subsamples val (CoOp does, except for ImageNet whose val is its test).
    `expected_sizes`: the published (train, val, test) sizes, to flag a non-standard split file; `classes` its
    class count (known before any file is read: a schedule in iterations turns it into epochs).
    `resources` are fetched by `restore data download`; `manual` says what a user must do by hand.
    `generate(root)` writes a synthetic dataset under ``root`` on first use (idempotent: cheap when it is there);
    `default_root()` is where it goes when a run names no data root.
    `location`: a dataset at a fixed place (an image folder given by path, `restore.data.folder`), read without
    a data root; `folder_split` how such a folder is split into train/val/test.
    """

    name: str
    title: str
    folder: str
    image_dir: str = "images"
    split_file: str | None = None
    aliases: tuple[str, ...] = ()
    reader: Reader | None = None
    test_only: bool = False
    files_listed: bool = False
    fewshot_val: bool = True
    expected_sizes: tuple[int, int, int] | None = None
    classes: int | None = None
    layout: str = ""
    resources: tuple[Resource, ...] = ()
    manual: str | None = None
    description: str = ""
    generate: Callable[[Path], object] | None = None
    default_root: Callable[[], Path] | None = None
    location: Path | None = None
    folder_split: FolderSplit | None = None
    keys: tuple[str, ...] = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.reader is None and not self.split_file:
            raise ConfigError(f"dataset spec {self.name!r} has neither a split file nor a reader")
        names = {self.name, self.title, self.folder, *self.aliases}
        object.__setattr__(self, "keys", tuple(sorted({normalise(n) for n in names})))

    @property
    def downloadable(self) -> bool:
        """Everything (images and split file) can be fetched without a manual step."""
        return bool(self.resources) and self.manual is None

    def expected_layout(self) -> str:
        if self.layout:
            return self.layout
        split = f"\n  {self.folder}/{self.split_file}" if self.split_file else ""
        return f"  {self.folder}/{self.image_dir or '.'}/...{split}"


def normalise(name: str) -> str:
    """Case- and punctuation-insensitive key: 'DescribableTextures', 'oxford_pets', 'ImageNet-A' all work."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


_REGISTRY: dict[str, DatasetSpec] = {}
_KEYS: dict[str, str] = {}


def register_dataset(spec: DatasetSpec, *, replace: bool = False) -> DatasetSpec:
    """Add a dataset. Its name, title, folder and aliases must not already name another dataset."""
    if spec.name in _REGISTRY and not replace:
        raise ConfigError(
            f"dataset {spec.name!r} is already registered", hint="pass replace=True to override the existing entry"
        )
    if spec.name in _REGISTRY:
        unregister_dataset(spec.name)
    clashes = {k: _KEYS[k] for k in spec.keys if k in _KEYS}
    if clashes:
        raise ConfigError(
            f"dataset {spec.name!r}: names {sorted(clashes)} already refer to {sorted(set(clashes.values()))}",
            hint="choose another name or alias",
        )
    _REGISTRY[spec.name] = spec
    for k in spec.keys:
        _KEYS[k] = spec.name
    return spec


def unregister_dataset(name: str) -> None:
    spec = get_dataset(name)
    del _REGISTRY[spec.name]
    for k in spec.keys:
        _KEYS.pop(k, None)


def get_dataset(name: str) -> DatasetSpec:
    """A registered dataset by any of its names, or an image folder given by its path (`restore.data.folder`)."""
    from restore.data.folder import folder_spec, looks_like_path  # cycle: restore.data.folder imports this module

    _ensure_builtins()
    key = _KEYS.get(normalise(name))
    # A path names an image folder; so does a bare name that is no dataset's but an existing folder (-d photos).
    if (looks_like_path(name) and (key is None or Path(name).expanduser().exists())) or (
        key is None and Path(name).is_dir()
    ):
        return folder_spec(str(Path(name).expanduser().resolve()))
    if key is None:
        raise ConfigError(
            f"unknown dataset {name!r}",
            hint=f"known datasets: {', '.join(list_datasets())}; or the path of an image folder "
            "(<folder>/<class name>/<image>)",
        )
    return _REGISTRY[key]


def default_data_root() -> Path | None:
    """$RESTORE_DATA: the folder holding the dataset folders, for a command that names none."""
    env = os.environ.get("RESTORE_DATA")
    return Path(env).expanduser() if env else None


def default_root_for(dataset: str) -> Path | None:
    """The data root of a run that names none: a generated dataset (the synthetic world) or an image folder has
    its own home; others use $RESTORE_DATA."""
    if dataset:
        spec = get_dataset(dataset)
        if spec.default_root is not None:
            return spec.default_root()
    return default_data_root()


def data_root(dataset: str | None, root: Path | str | None) -> Path:
    """The root a command reads ``dataset`` from: ``root`` if given, else `default_root_for`; one clear error
    when there is none (used by runs, `restore eval`/`zeroshot` and the data commands alike)."""
    found = root if root is not None else default_root_for(dataset or "")
    if found is None:
        raise ConfigError(
            "no data root given" + (f" for {dataset}" if dataset else ""),
            hint="pass --root DIR (the folder holding the dataset folders) or set $RESTORE_DATA",
        )
    return Path(found)


def list_datasets() -> list[str]:
    _ensure_builtins()
    return list(_REGISTRY)


def _ensure_builtins() -> None:
    # Imported lazily so that the registry module itself stays free of the built-in table's imports. The
    # synthetic world's tasks and installed extensions' datasets come through `restore.plugins`.
    from restore.data import builtin  # noqa: F401  # cycle: builtin imports this module to register

    plugins.load_group(plugins.DATASETS)
