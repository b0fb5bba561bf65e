"""One live owner per run directory: an OS-level lock on ``<run_dir>/.owner.lock``.

Every process that writes a run directory (`restore run`, a sweep's worker, a resume, a re-report of a
finished run) holds an exclusive ``flock`` on the directory's lock file for as long as it works there. The
kernel drops the lock when its holder dies, however it dies (kill -9 included), so a lock is never stale
and needs no clean-up. A second process that wants the same directory while the first lives gets
`RunBusy` at once (it never waits silently): `restore run` prints it as an error, a sweep waits for the
cell (`restore.scale.sweep`).

The file also says who holds it (pid, host), for the message; the lock itself is what counts.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
from pathlib import Path

from restore.errors import RestoreError

LOCK_FILE = ".owner.lock"


class RunBusy(RestoreError):
    """The run directory is owned by another live process."""

    exit_code = 2


class RunLock:
    """An exclusive lock on a run directory, held until `release` (or the holder's death)."""

    def __init__(self, run_dir: Path, fd: int, created: list[Path]) -> None:
        self.run_dir, self._fd, self.created = run_dir, fd, created  # created: the folders acquire made

    @property
    def held(self) -> bool:
        return self._fd >= 0

    def release(self, *, remove_empty: bool = False) -> None:
        """Let go of the directory; its lock file goes with the lock (a killed holder leaves it, harmless).
        With ``remove_empty``, the folders `acquire` created are removed again if nothing else was written
        into them, so a run that stopped before it started leaves none behind."""
        if self._fd < 0:
            return
        try:
            with contextlib.suppress(OSError):  # still locked: whoever opened this inode re-checks it (acquire)
                (self.run_dir / LOCK_FILE).unlink()
            if remove_empty:
                with contextlib.suppress(OSError):
                    for folder in self.created:  # deepest first; stops at the first one that is not empty
                        folder.rmdir()
        finally:
            os.close(self._fd)  # closing the last descriptor drops the flock
            self._fd = -1

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _holder(path: Path) -> str:
    try:
        text = path.read_text().strip()
    except OSError:
        return "another process"
    return f"process {text}" if text else "another process"


def acquire(run_dir: str | Path) -> RunLock:
    """Take the run directory ``run_dir`` (created if missing) for this process, or raise `RunBusy`."""
    import fcntl  # POSIX only: a module that imports this one stays importable elsewhere

    run_dir = Path(run_dir)
    created = [p for p in (run_dir, *run_dir.parents) if not p.exists()]
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _unwritable(run_dir, e) from None
    path = run_dir / LOCK_FILE
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise _unwritable(run_dir, e) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise _unwritable(run_dir, e) from None
            raise RunBusy(
                f"run directory {run_dir} is in use by {_holder(path)}",
                hint="wait for that run to end (or stop it); a sweep waits for such a run by itself",
            ) from None
        try:  # a holder that removed the file (an emptied folder) may have let go of this inode: retry
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    with contextlib.suppress(OSError):  # who holds it, for another process's message; the lock is what counts
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} on {socket.gethostname()}\n".encode(), 0)
    return RunLock(run_dir, fd, created)


def _unwritable(run_dir: Path, e: OSError) -> RestoreError:
    return RestoreError(
        f"cannot write the run directory {run_dir}: {e.strerror or e}",
        hint="choose an output folder you can write to (--out or --run-dir), on a disk with free space",
    )
