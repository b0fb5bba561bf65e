"""Load single self-contained modules of open_clip (its BPE tokenizer, its zero-shot metadata) by file.

``import open_clip`` executes the whole package (timm, model factories: seconds on every command start);
these two modules import nothing of open_clip's own, so they are loaded on their own, once.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from functools import cache
from pathlib import Path
from types import ModuleType


@cache
def open_clip_module(name: str) -> ModuleType:
    """``open_clip.<name>`` without importing the package (the real module when it is already imported)."""
    full = f"open_clip.{name}"
    if full in sys.modules:
        return sys.modules[full]
    spec = importlib.util.find_spec("open_clip")
    if spec is not None and spec.submodule_search_locations:
        path = Path(next(iter(spec.submodule_search_locations))) / f"{name}.py"
        mod_spec = importlib.util.spec_from_file_location(f"_restore_open_clip_{name}", path)
        if path.is_file() and mod_spec is not None and mod_spec.loader is not None:
            module = importlib.util.module_from_spec(mod_spec)
            mod_spec.loader.exec_module(module)
            return module
    return importlib.import_module(full)
