"""Deterministic randomness: one seed per (run seed, epoch, purpose), set on every generator a run uses.

A run reseeds Python, NumPy and torch (and the data loader's shuffling generator, whose draws also seed the
loader's workers) at the start of every epoch from (seed, epoch). What an epoch draws therefore depends only
on the seed and the epoch number, never on how many numbers earlier epochs drew — so resuming from the
checkpoint written after epoch k replays epoch k+1 exactly, even if the run was killed in the middle of it.

A training image's random augmentation is drawn with generators seeded from (seed, epoch, sample index)
(`SampleSeeded`): it is the same whichever process or loader worker reads the image and whichever batch
it lands in, so runs with any number of loader workers or distributed processes see the same images.
"""

from __future__ import annotations

import hashlib
import random
import signal
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from restore.errors import RestoreWarning


def derive_seed(seed: int, *keys: object) -> int:
    """A 32-bit seed from the run seed and any keys (epoch, purpose); stable across processes and platforms."""
    text = "/".join([str(int(seed)), *(str(k) for k in keys)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")


def deterministic_kernels(device: torch.device | str) -> Callable[[], None]:
    """Training on the CPU uses torch's deterministic kernels; returns the call that puts the previous setting
    back (the trainer calls it when training stops).

    Why: at more than one thread, torch's CPU `index_put_(accumulate=True)` — the backward of advanced
    indexing, which the packed text encoder runs on every step — adds floats with atomic operations in the
    order the threads happen to run, so two identical runs at 2 threads differed (learned tensors by up to
    1.3e-5 after 6 epochs). The deterministic mode sorts the indices and adds in a fixed order. Other CPU
    kernels (GEMM, reductions) split work by the thread count only, so a run is bit-identical to a rerun or
    a resume at the same thread count. CUDA is left as it is: its deterministic mode needs a cuBLAS workspace
    setting and costs speed, and GPU runs are documented as identical only up to rounding.
    """
    if torch.device(device).type != "cpu":
        return lambda: None
    before = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)  # a kernel without a deterministic twin warns

    def undo() -> None:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])

    return undo


def seed_everything(seed: int) -> None:
    """Seed Python's `random`, NumPy's global generator and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds all CUDA devices


def loader_generator(seed: int, epoch: int) -> torch.Generator:
    """The data loader's generator for ``epoch``: it draws the shuffling order and the workers' base seed."""
    g = torch.Generator()
    g.manual_seed(derive_seed(seed, epoch, "loader"))
    return g


def worker_init(worker_id: int) -> None:
    """Seed a loader worker's Python and NumPy generators from its torch seed (which the loader derives from
    its generator), so augmentations drawn with any of the three are reproducible.

    The worker also ignores SIGINT: Ctrl-C in a terminal reaches the whole process group, and a forked worker
    would otherwise run the trainer's handler too (printing "saving" once per worker) or die mid-call with
    `Exception ignored ... KeyboardInterrupt`. The main process stops its workers itself."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    base = torch.initial_seed() % 2**32
    random.seed(base)
    np.random.seed(base)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of training item ``index``'s augmentation in ``epoch``."""
    return derive_seed(seed, epoch, "sample", index)


@contextmanager
def _own_generators(seed: int) -> Iterator[None]:
    """Python, NumPy and torch's CPU generator seeded with ``seed`` inside the block, and restored after it
    (in the main process the trainer's own draws must not depend on what the loader drew)."""
    py, npst, cpu = random.getstate(), np.random.get_state(), torch.get_rng_state()
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.default_generator.manual_seed(seed)  # CPU only: the augmentations run on the CPU
    try:
        yield
    finally:
        random.setstate(py)
        np.random.set_state(npst)
        torch.set_rng_state(cpu)


class SampleSeeded(Dataset):
    """A training set of one epoch whose item ``i`` is loaded with every generator seeded from
    (seed, epoch, i): its augmentation does not depend on the process, the worker or the batch."""

    def __init__(self, dataset: Any, seed: int, epoch: int) -> None:
        self.dataset, self.seed, self.epoch = dataset, seed, epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        with _own_generators(sample_seed(self.seed, self.epoch, index)):
            return self.dataset[index]


def rng_state() -> dict[str, Any]:
    """Every generator's state as plain tensors, lists and numbers (loadable with ``weights_only=True``), and
    the torch thread count, which decides the rounding of CPU kernels (see `set_rng_state`)."""
    version, internal, gauss = random.getstate()
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": {"version": version, "state": list(internal), "gauss": gauss},
        "numpy": {
            "kind": str(np_state[0]),
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
        "threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Inverse of `rng_state`. A resume at another torch thread count than the checkpoint's is warned about:
    CPU kernels split their sums by the thread count, so the rest of the run rounds differently (results
    agree to about 1e-7, not bit for bit)."""
    saved = state.get("threads")
    if isinstance(saved, int) and saved != torch.get_num_threads():
        warnings.warn(
            f"resuming at {torch.get_num_threads()} torch threads a run saved at {saved}: the result will not be "
            f"bit-identical to an uninterrupted run (set OMP_NUM_THREADS={saved} for that)",
            RestoreWarning,
            stacklevel=2,
        )
    py = state["python"]
    random.setstate((int(py["version"]), tuple(int(x) for x in py["state"]), py["gauss"]))
    npst = state["numpy"]
    keys = npst["keys"].numpy().astype(np.uint32)
    np.random.set_state((npst["kind"], keys, npst["pos"], npst["has_gauss"], npst["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
