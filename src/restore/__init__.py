"""restore: prompt learning for CLIP with feature-shift consistency, and the methods it is compared with.

    import restore
    result = restore.run("b2n", method="maple", dataset="dtd", root="~/data", seed=1)
    print(result.metrics["hm"])

`run`, `train`, `evaluate`, `zeroshot`, `load_run` (see `restore.api`) load torch on first use, so that
`import restore` stays fast.
"""

from __future__ import annotations

from typing import Any

from restore.errors import RestoreError

__version__ = "0.1.0"

_API = ("run", "train", "evaluate", "zeroshot", "load_run", "LoadedRun", "Predictions", "RunResult")


def __getattr__(name: str) -> Any:
    if name in _API:
        from restore import api  # slow: the API loads torch; `import restore` stays fast

        return getattr(api, name)
    raise AttributeError(f"module 'restore' has no attribute {name!r}")


__all__ = [
    "LoadedRun", "Predictions", "RestoreError", "RunResult", "__version__", "evaluate", "load_run", "run", "train",
    "zeroshot",
]
