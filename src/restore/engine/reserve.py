"""Room kept aside on the run's disk so that a run stopped by a full disk can still say so.

A run that fails because its disk filled up must still write ``run.json`` and its database row as
``failed`` — and on a full disk nothing can be written. So while a run works, its directory holds a small
file of real (allocated) blocks, ``.reserve``; on the way out the run deletes it first, which hands those
blocks back to the file system, and then records how it ended. A database on the same disk gains the
same room. Best effort: if the reserve cannot be made (the disk is already full) the run goes on and will
fail at its first write, as before.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

RESERVE_FILE = ".reserve"
RESERVE_BYTES = 256 * 1024  # run.json, a few SQLite WAL pages and their temporary copies, with room to spare


class SpaceReserve:
    """Allocated blocks in ``folder/.reserve`` until `free`."""

    def __init__(self, folder: Path, size: int = RESERVE_BYTES) -> None:
        self.path = Path(folder) / RESERVE_FILE
        try:
            with open(self.path, "wb") as f:
                f.write(b"\0" * size)  # zeros written, not a sparse file: the blocks are really taken
                f.flush()
        except OSError:
            self.free()

    def free(self) -> None:
        """Give the room back (before writing how the run ended, and when it ends)."""
        with contextlib.suppress(OSError):
            self.path.unlink(missing_ok=True)
