"""Opening and checking image files, with failures that name the file."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image

from restore.errors import DataError

CHUNK = 2048  # paths handed to the thread pool at a time (bounded memory for ImageNet-sized lists)


DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def decode_image(path: Path) -> Image.Image:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. PIL's palette-transparency warning; not a user problem
        with Image.open(path) as im:
            im.load()
            return im.convert("RGB")


def open_image(path: Path) -> Image.Image:
    """The decoded RGB image at `path`; a missing or undecodable file is a DataError naming it."""
    try:
        return decode_image(path)
    except FileNotFoundError:
        raise DataError(f"image file is missing: {path}", hint="run `restore data verify` on the dataset") from None
    except DECODE_ERRORS as e:
        raise DataError(
            f"cannot decode image {path}: {e}",
            hint="re-download or delete the file; `restore data verify` lists every bad file; "
            "on_corrupt='skip' leaves such files out and counts them",
        ) from None


def image_problem(path: Path) -> str | None:
    """None if `path` decodes completely, else what is wrong: 'missing' or 'corrupt: <decoder message>'."""
    try:
        decode_image(path)
    except FileNotFoundError:
        return "missing"
    except DECODE_ERRORS as e:
        return f"corrupt: {e}"
    return None


def find_bad_images(
    paths: Iterable[Path], *, workers: int = 4, progress: Callable[[int], None] | None = None
) -> list[tuple[Path, str]]:
    """(path, problem) for each path that is missing or does not decode, checked in parallel threads.

    Decoding releases the GIL in Pillow's C code, so threads scale without pickling paths to processes.
    `progress(n)` is called after each chunk with the number of paths just checked.
    """
    paths = list(paths)
    bad: list[tuple[Path, str]] = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for start in range(0, len(paths), CHUNK):
            chunk = paths[start : start + CHUNK]
            for path, problem in zip(chunk, pool.map(image_problem, chunk), strict=True):
                if problem is not None:
                    bad.append((path, problem))
            if progress is not None:
                progress(len(chunk))
    return bad
