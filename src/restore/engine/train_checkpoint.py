"""The training checkpoint a run writes after every epoch, and reads to resume.

It holds plain tensors, numbers, strings, lists and dicts only, so it loads with ``torch.load(weights_only=True)``
(no pickled code runs when a checkpoint is read): the learnable state, the optimiser and grad-scaler state,
the epoch, the learning-rate schedule's position, every RNG state, the method's extra training state and
the run's config (hash and settings), which a resume must match. Written atomically: a kill during the
save leaves the previous epoch's checkpoint intact.
"""

from __future__ import annotations

import io
import json
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from restore.errors import CheckpointError
from restore.fileio import atomic_write

FORMAT = "restore-train/1"


def save_training_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` (plus the format tag) atomically."""
    payload = {"format": FORMAT, **state}
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    blob = buffer.getvalue()
    return atomic_write(path, lambda f: f.write(blob))


def load_training_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by `save_training_checkpoint`, or fail saying what is wrong with the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no training checkpoint at {path}", hint="start the run without --resume")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, not a torch file, TorchScript, or disallowed (pickled) objects
        raise _unreadable(path, e) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"{path} is not a restore training checkpoint (format {found!r}, expected {FORMAT!r})")
    return state


def _unreadable(path: Path, e: Exception) -> CheckpointError:
    """What is wrong with a file torch.load(weights_only=True) refused, in our words rather than torch's."""
    text = str(e)
    hint = "delete it to start the run from scratch (or restore it from a backup)"
    if isinstance(e, pickle.UnpicklingError) and ("weights only" in text.lower() or "weights_only" in text):
        return CheckpointError(
            f"{path} contains pickled Python objects besides tensors; they are not loaded, since unpickling them "
            "could run code",
            hint="a training checkpoint holds only tensors and plain data: " + hint,
        )
    if "TorchScript" in text:
        return CheckpointError(f"{path} is a TorchScript archive, not a restore training checkpoint", hint=hint)
    first = re.sub(r"\x1b\[[0-9;]*m", "", text).strip().splitlines()[0][:200] if text.strip() else ""
    return CheckpointError(f"{path} is not a readable training checkpoint ({type(e).__name__}: {first})", hint=hint)


def check_same_config(state: dict[str, Any], config_hash: str, identity: dict[str, Any], path: Path) -> None:
    """Refuse to resume a checkpoint written under other settings: name the settings that differ."""
    if state.get("config_hash") == config_hash:
        return
    try:
        saved = json.loads(state.get("config", "{}"))
    except json.JSONDecodeError:
        saved = {}
    diffs = differences(saved, identity)
    shown = "; ".join(f"{k}: {a!r} in the checkpoint, {b!r} now" for k, a, b in diffs[:6]) or "unknown settings"
    raise CheckpointError(
        f"cannot resume {path}: it was written with other settings ({shown})",
        hint="resume with the run's own config (its config.yaml), or start a new run without --resume",
    )


def differences(a: Any, b: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted key, value in a, value in b) for every leaf where two nested mappings differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += differences(a.get(k), b.get(k), f"{prefix}.{k}" if prefix else str(k))
        return out
    return [] if a == b else [(prefix or "config", a, b)]
