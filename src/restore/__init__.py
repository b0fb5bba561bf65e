"""restore: prompt learning for CLIP with feature-shift consistency, and the methods it is compared with."""

from __future__ import annotations

from restore.errors import RestoreError

__version__ = "0.1.0"
__all__ = ["RestoreError", "__version__"]
