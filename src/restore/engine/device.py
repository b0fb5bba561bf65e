"""Device and precision: which device a run uses, and the autocast context of its forward passes."""

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


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """fp16/bf16 autocast on CUDA; fp32 everywhere else (the learnable parameters always stay fp32)."""
    if precision == "fp32" or device.type != "cuda":
        return contextlib.nullcontext()
    dtype = torch.float16 if precision == "fp16" else torch.bfloat16
    return torch.autocast(device_type="cuda", dtype=dtype)


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    """Loss scaling for fp16 (whose small gradients underflow); disabled (a no-op) otherwise."""
    return torch.amp.GradScaler(device.type, enabled=device.type == "cuda" and precision == "fp16")


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
