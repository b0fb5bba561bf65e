"""Prompt-learning methods, each a composition of parts registered under a name.

Importing this package registers every method: ``zeroshot``, ``coop``, ``cocoop``, ``kgcoop``, ``vpt``,
``deep_text``, ``ivlp``, ``maple``, ``promptsrc``, ``clip_lora`` and the RESTORE variants.
"""

from restore.methods import (  # noqa: F401  (importing registers)
    clip_lora,
    cocoop,
    coop,
    ivlp,
    kgcoop,
    maple,
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
