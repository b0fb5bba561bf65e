"""Prompt-learning methods, each a composition of parts registered under a name.

Importing this package registers every method: ``zeroshot``, ``coop``, ``cocoop``, ``kgcoop``, ``vpt``,
``deep_text``, ``ivlp``, ``maple``, ``promptsrc``, the RESTORE variants, DePT on CoOp/MaPLe/PromptSRC
(``dept_coop``, ``dept_maple``, ``dept_promptsrc``) and ``mmrl``.
"""

from restore.methods import (  # noqa: F401  (importing registers)
    cocoop,
    coop,
    dept,
    ivlp,
    kgcoop,
    maple,
    mmrl,
    promptsrc,
    restore,
    vpt,
    zeroshot,
)
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

__all__ = [
    "MethodConfig",
    "Output",
    "PromptedCLIP",
    "build_method",
    "make_config",
    "method_class",
    "method_names",
    "method_table",
]
