"""Downloading files (resumable, checksummed, atomic) and extracting archives without escaping the target.

Plain urllib, so nothing beyond the standard library and tqdm is needed. A download writes to
``<dest>.part``, resumes it with an HTTP Range request, checks the sha256 when one is given, and only then
renames it into place: ``dest`` either does not exist or is complete and verified. Concurrent downloads of
the same file (several workers starting at once on an empty cache) are serialised by a lock file.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.client
import os
import re
import shutil
import socket
import stat
import sys
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import IO

from tqdm.auto import tqdm

from restore.errors import DownloadError

CHUNK = 1 << 20
USER_AGENT = "restore/0.1 (+urllib)"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def part_path(dest: Path) -> Path:
    return dest.with_suffix(dest.suffix + ".part")


def _by_hand(url: str, dest: Path) -> str:
    return f"download {url} by other means and put it at {dest}"


@contextlib.contextmanager
def _locked(dest: Path) -> Iterator[None]:
    """An exclusive lock on ``<dest>.lock`` where the platform has flock; a no-op elsewhere."""
    try:
        import fcntl  # POSIX only
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    lock = dest.with_suffix(dest.suffix + ".lock")
    with open(lock, "a+b") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class _Progress:
    """A tqdm bar on stderr (looked up at call time, so captured output sees it), or nothing."""

    def __init__(self, enabled: bool, name: str, total: int | None, initial: int) -> None:
        self.bar = None
        if enabled:
            self.bar = tqdm(
                total=total,
                initial=initial,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=name,
                file=sys.stderr,
                mininterval=0.5,
                dynamic_ncols=True,
            )

    def update(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _total_from_headers(response: http.client.HTTPResponse, offset: int) -> int | None:
    content_range = response.headers.get("Content-Range")
    if content_range:
        m = re.match(r"bytes\s+\d+-\d+/(\d+)", content_range)
        if m:
            return int(m.group(1))
    length = response.headers.get("Content-Length")
    return int(length) + offset if length is not None and length.isdigit() else None


def _fetch_once(url: str, part: Path, resume: bool, progress: bool, timeout: float, name: str) -> None:
    """One HTTP request that appends to (or restarts) ``part`` until the body ends; raises on a short body."""
    offset = part.stat().st_size if resume and part.exists() else 0
    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:
            # Range not satisfiable: the partial file is already whole (or longer than the file). Restart
            # unless the server tells us the size and it matches.
            m = re.match(r"bytes\s+\*/(\d+)", e.headers.get("Content-Range", "") or "")
            if m and int(m.group(1)) == offset:
                return
            part.unlink(missing_ok=True)
            return _fetch_once(url, part, False, progress, timeout, name)
        raise
    with response:
        status = getattr(response, "status", 200)
        partial = status == 206 and offset > 0
        if partial:
            m = re.match(r"bytes\s+(\d+)-", response.headers.get("Content-Range", ""))
            if not m or int(m.group(1)) != offset:
                partial = False  # a range we did not ask for: start over
        if not partial:
            offset = 0  # the server ignored Range (or there was none): full body from the start
        total = _total_from_headers(response, offset) if partial else _total_from_headers(response, 0)
        bar = _Progress(progress, name, total, offset)
        try:
            with open(part, "ab" if partial else "wb") as f:
                received = offset
                while block := response.read(CHUNK):
                    f.write(block)
                    received += len(block)
                    bar.update(len(block))
        finally:
            bar.close()
        if total is not None and received < total:
            raise http.client.IncompleteRead(b"", total - received)


_NETWORK_ERRORS = (urllib.error.URLError, http.client.HTTPException, socket.timeout, ConnectionError, TimeoutError)


def download_file(
    url: str,
    dest: Path,
    sha256: str | None = None,
    *,
    resume: bool = True,
    progress: bool = True,
    timeout: float = 60,
    retries: int = 2,
) -> Path:
    """Download ``url`` to ``dest`` (resuming ``<dest>.part``), verify ``sha256``, rename into place.

    An interrupted transfer is retried ``retries`` times from where it stopped; if it still fails the
    partial file stays for the next call to resume. An existing ``dest`` is returned as is when it matches
    ``sha256`` (or none is given); one that does not match is an error, never silently replaced, since a user
    may have put it there by hand.
    """
    dest = Path(dest)
    expected = sha256.lower() if sha256 else None
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _locked(dest):
        if dest.exists():
            if expected is not None:
                got = sha256_file(dest)
                if got != expected:
                    raise DownloadError(
                        f"{dest} exists but its sha256 is {got}, not the expected {expected} (from {url})",
                        hint=f"delete {dest} to download it again, or replace it with the right file",
                    )
            return dest
        part = part_path(dest)
        if not resume:
            part.unlink(missing_ok=True)
        last_error: BaseException | None = None
        for attempt in range(retries + 1):
            try:
                # Later attempts always continue this call's own partial file.
                _fetch_once(url, part, resume or attempt > 0, progress, timeout, dest.name)
                last_error = None
                break
            except urllib.error.HTTPError as e:
                # A definite answer from the server (404, 403...): retrying will not help.
                raise DownloadError(
                    f"could not download {url}: HTTP {e.code} {e.reason}", hint=_by_hand(url, dest)
                ) from None
            except _NETWORK_ERRORS as e:
                last_error = e
                if attempt < retries:
                    time.sleep(min(0.5 * 2**attempt, 5.0))
            except OSError as e:
                raise DownloadError(f"could not write {part} while downloading {url}: {e}") from None
        if last_error is not None:
            reason = getattr(last_error, "reason", None) or last_error or type(last_error).__name__
            kept = f"; the partial file {part} is kept and the next attempt resumes it" if part.exists() else ""
            raise DownloadError(
                f"could not download {url} after {retries + 1} attempts: {reason}{kept}", hint=_by_hand(url, dest)
            )
        if expected is not None:
            got = sha256_file(part)
            if got != expected:
                part.unlink(missing_ok=True)
                raise DownloadError(
                    f"checksum mismatch for {url}: expected sha256 {expected}, got {got}; the download was deleted",
                    hint=f"try again; if it keeps failing, {_by_hand(url, dest)} (with that checksum)",
                )
        os.replace(part, dest)
    return dest


# --- archives -----------------------------------------------------------------------------------------------


def _unsafe_name(name: str) -> str | None:
    """Why a member name would land outside the target, or None when it is safe."""
    if not name or "\x00" in name:
        return "an empty or invalid name"
    posix, windows = PurePosixPath(name), PureWindowsPath(name)
    if posix.is_absolute() or windows.is_absolute() or windows.drive or name.startswith(("/", "\\")):
        return "an absolute path"
    if ".." in posix.parts or ".." in windows.parts:
        return "a '..' component"
    return None


def _check(archive: Path, name: str, why: str | None) -> None:
    if why is not None:
        raise DownloadError(
            f"refusing to extract {archive}: member {name!r} has {why}; nothing was extracted",
            hint="the archive is corrupt or malicious; download it again from the original source",
        )


def _tar_members(archive: Path, tf: tarfile.TarFile) -> list[tarfile.TarInfo]:
    members = tf.getmembers()
    for m in members:
        _check(archive, m.name, _unsafe_name(m.name))
        if m.issym() or m.islnk():
            _check(archive, m.name, f"a link (to {m.linkname!r}); links are not extracted")
        if not (m.isfile() or m.isdir()):
            _check(archive, m.name, "a special file type (device, fifo)")
    return members


def _zip_is_link(info: zipfile.ZipInfo) -> bool:
    mode = info.external_attr >> 16
    return stat.S_ISLNK(mode)


def _zip_members(archive: Path, zf: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    infos = zf.infolist()
    for info in infos:
        _check(archive, info.filename, _unsafe_name(info.filename))
        kind = stat.S_IFMT(info.external_attr >> 16)  # 0 when the writer recorded no Unix file type
        if _zip_is_link(info):
            _check(archive, info.filename, "a link; links are not extracted")
        if kind and kind not in (stat.S_IFREG, stat.S_IFDIR):
            _check(archive, info.filename, "a special file type (device, fifo)")
    return infos


def _target(root: Path, name: str) -> Path:
    target = (root / name).resolve()
    if not target.is_relative_to(root):
        raise DownloadError(f"refusing to extract member {name!r}: it resolves outside {root}")
    return target


def safe_extract(archive: Path, dest: Path) -> list[Path]:
    """Extract a zip, tar, tar.gz/tgz (or .bz2/.xz) archive into ``dest``; return the files written.

    Every member is checked before anything is written: absolute paths, ``..`` components, links and device
    files are refused with a DownloadError naming the member, and then nothing is extracted.
    """
    archive, dest = Path(archive), Path(dest)
    if not archive.is_file():
        raise DownloadError(f"archive {archive} does not exist")
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                members = [(i.filename, i.is_dir(), functools.partial(zf.open, i)) for i in _zip_members(archive, zf)]
                return _write_members(dest, members)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tf:
                members = [(m.name, m.isdir(), functools.partial(tf.extractfile, m)) for m in _tar_members(archive, tf)]
                return _write_members(dest, members)
        else:
            raise DownloadError(
                f"{archive} is not a zip or tar archive",
                hint="the download may be incomplete or an error page; delete it and download it again",
            )
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error) as e:
        raise DownloadError(
            f"{archive} is a damaged archive ({e})",
            hint="the download may be incomplete; delete it and download it again",
        ) from None


def _write_members(dest: Path, members: list[tuple[str, bool, Callable[[], IO[bytes] | None]]]) -> list[Path]:
    """Write checked archive members (name, is a folder, opener) under ``dest``; the files written."""
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    written: list[Path] = []
    for name, is_dir, open_member in members:
        target = _target(root, name)
        if is_dir:
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        src = open_member()
        assert src is not None  # regular files always have data
        with src, open(target, "wb") as out:
            shutil.copyfileobj(src, out, CHUNK)
        written.append(target)
    return written
