"""One run over several processes (``torchrun --nproc-per-node N -m restore train ...``): torch.distributed
helpers the engine uses, all of them no-ops in an ordinary single-process run.

How a distributed run stays equal to the single-process run with the same global batch and seed:

- `GlobalBatchSampler`: every rank draws the same permutation from (seed, epoch) and cuts it into the same
  global batches of ``data.batch_size`` (which stays the GLOBAL batch: the config, its hash and its run
  directory do not depend on the number of processes); rank r loads the r-th contiguous share of each one.
- Augmentations are seeded per sample from (seed, epoch, index) (`restore.engine.seeding.SampleSeeded`), so
  they do not depend on which process or loader worker reads an image.
- DistributedDataParallel over the method module averages the gradients over ranks; the trainer scales each
  rank's loss by ``local_n * world / global_n`` so that average is the gradient of the global-batch mean even
  when a batch does not split evenly (and batch-independent terms such as KgCoOp's keep their weight).
- Batch statistics that enter a loss non-linearly (RESTORE's mean vision shift per layer) go through
  `batch_mean`, a differentiable all-reduce over a separate process group (`World.stats_group`, so its
  collectives never interleave with DDP's gradient buckets).
- Evaluation is sharded over ranks and the hit counts all-reduced; only rank 0 writes files, checkpoints and
  database rows (`is_main`), and it shares the outcome of preparing the run directory (`share_outcome`).
"""

from __future__ import annotations

import atexit
import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import Sampler

import restore.errors as errors
from restore.errors import ConfigError, RestoreError

ENV_KEYS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class World:
    """This process's place in a distributed run."""

    rank: int
    size: int
    local_rank: int
    backend: str
    stats_group: Any = None  # process group for batch statistics and metric sums

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def device(self) -> torch.device:
        """Where collectives' tensors live: NCCL needs them on this rank's GPU, gloo on the CPU."""
        return torch.device("cuda", self.local_rank) if self.backend == "nccl" else torch.device("cpu")


_WORLD: World | None = None
_STEP_GLOBAL_N: int | None = None


def requested_world_size() -> int:
    """WORLD_SIZE from the environment (torchrun sets it); 1 when not launched by a distributed launcher."""
    text = os.environ.get("WORLD_SIZE", "1")
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"WORLD_SIZE={text!r} is not a number", hint="launch with torchrun") from None


def init_from_env(device: torch.device) -> World | None:
    """Join the process group torchrun describes (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT):
    NCCL on CUDA, gloo on CPU. None (and nothing initialised) when WORLD_SIZE is 1 or unset."""
    global _WORLD
    if _WORLD is not None:
        return _WORLD
    size = requested_world_size()
    if size <= 1:
        return None
    missing = [k for k in ENV_KEYS if k not in os.environ]
    if missing:
        raise ConfigError(
            f"WORLD_SIZE={size} but {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set",
            hint="launch distributed runs with torchrun (torchrun --nproc-per-node N -m restore train ...)",
        )

    if not dist.is_available():
        raise ConfigError("this torch build has no torch.distributed", hint="run in one process, without torchrun")
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    backend = "nccl" if device.type == "cuda" else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    _WORLD = World(rank, dist.get_world_size(), local_rank, backend, dist.new_group(backend=backend))
    atexit.register(shutdown)
    return _WORLD


def rank_device(device: torch.device) -> torch.device:
    """A distributed run's CUDA device is its local rank's GPU (``cuda`` or ``cuda:N`` alike)."""
    if device.type != "cuda" or requested_world_size() <= 1:
        return device
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if local_rank >= torch.cuda.device_count():
        raise ConfigError(
            f"local rank {local_rank} has no GPU: this machine has {torch.cuda.device_count()}",
            hint="start at most one process per GPU (torchrun --nproc-per-node)",
        )
    return torch.device("cuda", local_rank)


def current() -> World | None:
    """The distributed run this process takes part in; None in a single-process run."""
    return _WORLD


def is_main() -> bool:
    """True where files, checkpoints and database rows are written: rank 0, or a single-process run."""
    return _WORLD is None or _WORLD.is_main


def shutdown() -> None:
    """Leave the process group (the end of a distributed command)."""
    global _WORLD
    if _WORLD is None:
        return

    if dist.is_initialized():
        dist.destroy_process_group()
    _WORLD = None


# --- agreeing on what rank 0 decided ---------------------------------------------------------------------
def share_outcome(value: Any = None, error: BaseException | None = None) -> None:
    """Rank 0: tell the other ranks the result of a step only it runs (preparing the run directory), or the
    error it met, so they stop with the same message instead of waiting in a collective."""
    if _WORLD is None:
        return
    payload: Any
    if error is None:
        payload = ("ok", value)
    elif isinstance(error, RestoreError):
        payload = ("error", type(error).__name__, error.message, error.hint)
    else:
        payload = ("error", "RestoreError", f"rank 0 failed: {type(error).__name__}: {error}", None)
    _broadcast(payload)


def receive_outcome() -> Any:
    """Other ranks: the value rank 0 shared with `share_outcome`, or its error raised here."""
    assert _WORLD is not None
    payload = _broadcast(None)
    if payload[0] == "ok":
        return payload[1]

    cls = getattr(errors, payload[1], RestoreError)
    raise cls(payload[2], hint=payload[3])


def _broadcast(obj: Any) -> Any:
    assert _WORLD is not None
    box = [obj]
    dist.broadcast_object_list(box, src=0, group=_WORLD.stats_group, device=_WORLD.device)
    return box[0]


# --- sums across ranks -----------------------------------------------------------------------------------
def all_reduce_sum(values: Sequence[float]) -> list[float]:
    """Element-wise sums over ranks (float64; exact for counts); the values themselves in one process."""
    if _WORLD is None:
        return [float(v) for v in values]

    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=_WORLD.device)
    dist.all_reduce(t, group=_WORLD.stats_group)
    return t.tolist()


@contextlib.contextmanager
def global_batch(n: int) -> Iterator[None]:
    """Within a training step: the global batch has ``n`` samples (what `batch_mean` divides by)."""
    global _STEP_GLOBAL_N
    previous, _STEP_GLOBAL_N = _STEP_GLOBAL_N, n
    try:
        yield
    finally:
        _STEP_GLOBAL_N = previous


def batch_mean(per_sample: Tensor) -> Tensor:
    """The mean of per-sample values over the GLOBAL batch of the current training step, differentiable.

    Single process (or outside a training step): ``per_sample.mean()``. Across ranks: the local sums are
    all-reduced by `_SumOverRanks`, whose backward sums the upstream gradients of all ranks, so a loss that is
    non-linear in the batch mean gets the single-process gradient.
    """
    if _WORLD is None or _STEP_GLOBAL_N is None:
        return per_sample.mean()
    return _SumOverRanks.apply(per_sample.sum(), _WORLD.stats_group) / _STEP_GLOBAL_N


class _SumOverRanks(torch.autograd.Function):
    """Differentiable all-reduce (sum): the backward sums the upstream gradients of all ranks, which is
    what each rank's share of the sum receives from a loss every rank computes from the same total.
    (torch.distributed.nn.functional.all_reduce does the same and is deprecated.)"""

    @staticmethod
    def forward(ctx: Any, tensor: Tensor, group: Any) -> Tensor:
        ctx.group = group
        out = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out, group=group)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return _SumOverRanks.apply(grad, ctx.group), None


def wrap_ddp(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """DistributedDataParallel over the module's trainable parameters only: the frozen backbone and the
    buffers (identical on every rank by construction) are neither broadcast nor synchronised."""
    ignore = [n for n, p in module.named_parameters() if not p.requires_grad]
    ignore += [n for n, _ in module.named_buffers()]
    DDP._set_params_and_buffers_to_ignore_for_model(module, ignore)
    device_ids = [device.index] if device.type == "cuda" else None
    return DDP(module, device_ids=device_ids, broadcast_buffers=False)


# --- the sampler -----------------------------------------------------------------------------------------
class GlobalBatchSampler(Sampler[list[int]]):
    """This rank's share of each global batch of one epoch.

    The permutation is drawn from ``generator`` exactly as torch's RandomSampler draws it inside a DataLoader
    (one int64 for the workers' base seed first, then ``randperm``), so a single-process run keeps the order
    the engine has always used. Like Dassl, the incomplete last batch is dropped when there is a full one.
    Rank r gets the r-th of ``world`` contiguous, nearly equal parts of every global batch.
    """

    def __init__(self, n: int, batch_size: int, *, generator: torch.Generator, rank: int = 0, world: int = 1) -> None:
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} outside a world of {world}")
        self.n, self.batch_size, self.rank, self.world = n, batch_size, rank, world
        g = torch.Generator()
        g.set_state(generator.get_state())
        torch.empty((), dtype=torch.int64).random_(generator=g)  # the DataLoader's base-seed draw
        order = torch.randperm(n, generator=g).tolist()
        full = n // batch_size
        if full == 0:
            self.batches = [order] if order else []
        else:
            self.batches = [order[i * batch_size : (i + 1) * batch_size] for i in range(full)]

    def global_sizes(self) -> list[int]:
        return [len(b) for b in self.batches]

    def share(self, batch: list[int]) -> list[int]:
        q, r = divmod(len(batch), self.world)
        start = self.rank * q + min(self.rank, r)
        return batch[start : start + q + (1 if self.rank < r else 0)]

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.batches:
            yield self.share(batch)

    def __len__(self) -> int:
        return len(self.batches)
