"""Prompt-learning methods, each a composition of parts registered under a name.

Importing this package imports every module in it, so each module's ``@register`` adds its methods
(``zeroshot``, ``coop``, ``cocoop``, ``kgcoop``, ``vpt``, ``deep_text``, ``ivlp``, ``maple``, ``promptsrc``,
the RESTORE variants, ...): adding a method is adding a module here (README "Adding a method"); nothing in
this file changes. Methods outside the package register through `restore.plugins` (``--import``, entry points).
"""

import importlib
import pkgutil

from restore.methods.base import (
    MethodConfig,
    Output,
    PromptedCLIP,
    build_method,
    make_config,
    method_class,
    method_names,
    method_table,
)


def import_modules(path: list[str] | None = None, package: str = __name__) -> list[str]:
    """Import every module of ``package`` found on ``path`` (this package's by default) so that their
    ``@register`` decorators run; returns the module names, in the (sorted) order they were imported."""
    names = sorted(info.name for info in pkgutil.iter_modules(path if path is not None else __path__))
    for name in names:
        importlib.import_module(f"{package}.{name}")
    return names


import_modules()

__all__ = [
    "MethodConfig",
    "Output",
    "PromptedCLIP",
    "build_method",
    "import_modules",
    "make_config",
    "method_class",
    "method_names",
    "method_table",
]
