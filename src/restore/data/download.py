"""`restore data download`: fetch a dataset's public archives and split file into the CoOp layout.

The transfer itself (resume, sha256, atomic rename, safe extraction) is `restore.transfer`; this module knows
what each dataset needs: which files, their md5 where published, where each archive's contents go, and which
datasets need a manual step. Archives are unpacked into a staging folder under the root and moved into place
only when complete, so an interrupted run leaves no half-extracted dataset folder behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from restore.data.readers import read_split_json
from restore.data.registry import DatasetSpec, Resource, get_dataset
from restore.errors import DataError, DownloadError
from restore.transfer import download_file, safe_extract

STAGING = ".restore-downloads"


@dataclass
class FetchResult:
    """What `download_dataset` did. `complete` is False when a manual step remains (`manual` says which)."""

    dataset: str
    root: Path
    fetched: list[str] = field(default_factory=list)
    in_place: list[str] = field(default_factory=list)
    manual: str | None = None

    @property
    def complete(self) -> bool:
        return self.manual is None


def md5_file(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _target(resource: Resource) -> str | None:
    return resource.save_as or resource.creates


def download_dataset(
    name: str | DatasetSpec,
    root: str | Path,
    *,
    force: bool = False,
    keep_archives: bool = False,
    progress: bool = True,
    timeout: float = 60,
    log: Callable[[str], None] = print,
) -> FetchResult:
    """Fetch every public resource of dataset `name` under `root` that is not already in place.

    Resources already in place (their `save_as` / `creates` path exists) are skipped unless `force`.
    A dataset that needs a manual step gets its public parts (e.g. the split file) and a result whose
    `manual` holds the instructions.
    """
    spec = get_dataset(name) if isinstance(name, str) else name
    root = Path(root).expanduser().resolve()
    result = FetchResult(spec.name, root, manual=spec.manual)
    if not spec.resources:
        return result
    root.mkdir(parents=True, exist_ok=True)
    staging = root / STAGING
    for res in spec.resources:
        target = _target(res)
        if target and (root / target).exists() and not force:
            result.in_place.append(res.filename)
            log(f"{res.filename}: already in place ({root / target})")
            continue
        archive = staging / res.filename
        if force:
            archive.unlink(missing_ok=True)
        _fetch(res, archive, progress=progress, timeout=timeout, log=log)
        if res.save_as:
            _place_file(res, archive, root / res.save_as, spec)
        else:
            _extract(res, archive, root, staging)
            if not keep_archives:
                archive.unlink(missing_ok=True)
        result.fetched.append(res.filename)
        log(f"{res.filename}: done")
    # download_file's lock files are only needed while a transfer runs; then the staging folder goes if empty
    # (kept archives or leftovers of a failed extraction stay for inspection).
    for res in spec.resources:
        (staging / f"{res.filename}.lock").unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        staging.rmdir()
    return result


def _fetch(res: Resource, dest: Path, *, progress: bool, timeout: float, log: Callable[[str], None]) -> None:
    errors = []
    for url in (res.url, *res.mirrors):
        try:
            log(f"{res.filename}: downloading {url}")
            download_file(url, dest, res.sha256, progress=progress, timeout=timeout)
            break
        except DownloadError as e:
            errors.append(e)
            if len(errors) <= len(res.mirrors):
                log(f"{res.filename}: {e.message}; trying a mirror")
    else:
        if len(errors) == 1:
            raise errors[0]
        raise DownloadError(
            f"could not download {res.filename} from any of its {len(errors)} URLs:\n  "
            + "\n  ".join(e.message for e in errors),
            hint=errors[-1].hint,
        )
    if res.md5:
        got = md5_file(dest)
        if got != res.md5:
            dest.unlink(missing_ok=True)
            raise DownloadError(
                f"checksum mismatch for {res.filename}: expected md5 {res.md5}, got {got}; the download was deleted",
                hint="try again; a persistent mismatch means the server now serves a different file",
            )


def _place_file(res: Resource, downloaded: Path, dest: Path, spec: DatasetSpec) -> None:
    if res.is_split_file:
        try:
            entries = read_split_json(downloaded)
        except DataError as e:
            downloaded.unlink(missing_ok=True)
            raise DownloadError(
                f"the downloaded split file {res.filename} is not a valid split file: {e.message}",
                hint="the server may have sent an error page; download it by hand from " + res.url,
            ) from None
        sizes = tuple(len(entries[s]) for s in ("train", "val", "test"))
        if spec.expected_sizes and sizes != spec.expected_sizes:
            downloaded.unlink(missing_ok=True)
            raise DownloadError(
                f"the downloaded split file {res.filename} has sizes {sizes}, not the published {spec.expected_sizes}",
                hint="it is not the standard CoOp split file; download it by hand from " + res.url,
            )
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(downloaded, dest)


def _extract(res: Resource, archive: Path, root: Path, staging: Path) -> None:
    tmp = staging / f"{res.filename}.extract"
    if tmp.exists():
        shutil.rmtree(tmp)
    safe_extract(archive, tmp)
    for inner in res.inner:
        inner_path = tmp / inner
        if not inner_path.is_file():
            raise DownloadError(f"{res.filename} does not contain the expected archive {inner}")
        safe_extract(inner_path, inner_path.parent)
        inner_path.unlink()
    if res.move:
        for src, dst in res.move:
            if not (tmp / src).exists():
                raise DownloadError(
                    f"{res.filename} does not contain {src}; it holds {sorted(p.name for p in tmp.iterdir())}",
                    hint="the archive layout changed; lay the dataset out by hand as CoOp's DATASETS.md describes",
                )
            merge_move(tmp / src, root / dst)
    else:
        dest = root / (res.extract_to or ".")
        for entry in sorted(tmp.iterdir()):
            merge_move(entry, dest / entry.name)
    shutil.rmtree(tmp, ignore_errors=True)
    if res.creates and not (root / res.creates).exists():
        raise DownloadError(
            f"after extracting {res.filename}, {root / res.creates} does not exist",
            hint="the archive layout changed; lay the dataset out by hand as CoOp's DATASETS.md describes",
        )


def merge_move(src: Path, dst: Path) -> None:
    """Move `src` to `dst`, merging into an existing folder (files replace files of the same name)."""
    if not dst.exists():
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(src), str(dst))
    elif src.is_dir() and dst.is_dir():
        for child in list(src.iterdir()):
            merge_move(child, dst / child.name)
        src.rmdir()
    elif src.is_file() and dst.is_file():
        os.replace(src, dst)
    else:
        raise DownloadError(f"cannot move {src} to {dst}: one is a folder and the other a file")
