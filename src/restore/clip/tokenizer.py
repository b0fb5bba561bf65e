"""CLIP's byte-pair tokenizer (the vocabulary file ships with open_clip), with a clear error on overflow.

OpenAI's ``clip.tokenize`` raises a bare RuntimeError on a text longer than the context and open_clip's
silently truncates it (dropping the end-of-text token, which the text feature is read from). Neither is
acceptable for class names, so overflow is a `TokenizationError` naming the text.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import torch

from restore.errors import TokenizationError
from restore.openclip_files import open_clip_module

SOT_TOKEN = "<start_of_text>"
EOT_TOKEN = "<end_of_text>"


@lru_cache(maxsize=1)
def bpe_tokenizer():
    return open_clip_module("tokenizer").SimpleTokenizer()


def sot_id() -> int:
    return bpe_tokenizer().encoder[SOT_TOKEN]


def eot_id() -> int:
    return bpe_tokenizer().encoder[EOT_TOKEN]


def encode(text: str) -> list[int]:
    """BPE ids of ``text`` without start/end tokens."""
    return bpe_tokenizer().encode(text)


def decode(ids: Sequence[int]) -> str:
    return bpe_tokenizer().decode([i for i in ids if i not in (sot_id(), eot_id(), 0)]).strip()


def tokenize(texts: str | Sequence[str], context_length: int = 77) -> torch.Tensor:
    """(N, context_length) int64 ids: start token, text, end token, zero padding."""
    if isinstance(texts, str):
        texts = [texts]
    sot, eot = sot_id(), eot_id()
    out = torch.zeros(len(texts), context_length, dtype=torch.long)
    for i, text in enumerate(texts):
        ids = [sot, *encode(text), eot]
        if len(ids) > context_length:
            raise TokenizationError(
                f"text {text!r} is {len(ids)} tokens long; the text encoder's context holds {context_length}",
                hint="shorten the class name (e.g. in the split file or a class-name override) or the template",
            )
        out[i, : len(ids)] = torch.tensor(ids)
    return out
