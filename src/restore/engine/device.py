"""Device and precision: which device a run uses, the autocast context of its forward passes and the loss
scaler of its backward passes (the precisions themselves: docs/precision.md)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from restore.errors import ConfigError


def resolve_device(spec: str) -> torch.device:
    """``auto`` (CUDA when present, else CPU), ``cpu``, ``cuda`` or ``cuda:N``; a missing GPU is a ConfigError."""
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "cuda" or spec.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {spec!r} was asked for but CUDA is not available", hint="use --device cpu")
        if ":" in spec:
            index = spec.split(":", 1)[1]
            if not index.isdigit() or int(index) >= torch.cuda.device_count():
                raise ConfigError(
                    f"device {spec!r} does not exist", hint=f"this machine has {torch.cuda.device_count()} GPU(s)"
                )
        return torch.device(spec)
    raise ConfigError(f"unknown device {spec!r}", hint="use auto, cpu, cuda or cuda:N")


AUTOCAST_DTYPES = {"amp": torch.float16, "bf16": torch.bfloat16}


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The forward pass's autocast: fp16 for ``amp``, bf16 for ``bf16`` (CUDA only). None for ``fp32``, and
    none for ``fp16``, whose weights are already half (restore.engine.precision)."""
    dtype = AUTOCAST_DTYPES.get(precision)
    if dtype is None or device.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda", dtype=dtype)


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    """Loss scaling for ``amp`` (fp16 autocast, whose small gradients underflow); disabled (a no-op) for the
    others. ``fp16`` has none on purpose: the authors' trainers step their half tensors unscaled."""
    return torch.amp.GradScaler(device.type, enabled=device.type == "cuda" and precision == "amp")


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run a block with ``n`` intra-op threads (None: unchanged)."""
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
