"""Nearest vocabulary words of learned text context vectors (`restore analyze RUN --words K`).

CoOp's habit of reading a learned prompt: for each context vector at the text encoder's input (layer 0), the
K vocabulary tokens whose rows of the token-embedding table are nearest in Euclidean distance, decoded by the
BPE tokenizer. It is a rough reading — learned vectors need not lie near any word — but it shows whether a
context drifted from its initialisation ("a photo of a") and how far.

Every method whose text part learns a layer-0 context has one: CoOp (also class-specific contexts, one set
per class), CoCoOp (the image-independent context, before the meta-net's bias), IVLP, MaPLe, PromptSRC,
KgCoOp and the RESTORE variants. A backbone with a compact vocabulary (the world CLIP) is searched over the
tokens it has.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from restore.clip.tokenizer import bpe_tokenizer, eot_id, sot_id
from restore.errors import ConfigError

MAX_WORDS = 1000


@dataclass
class ContextWords:
    """The nearest vocabulary tokens of one learned context vector, nearest first."""

    position: str  # "ctx 1" ... (1-based), "class <name> ctx 1" for class-specific contexts
    words: list[tuple[str, float]]  # (decoded token, Euclidean distance)

    def to_dict(self) -> dict[str, Any]:
        return {"position": self.position, "words": [{"word": w, "distance": d} for w, d in self.words]}


def token_text(token_id: int) -> str:
    """One BPE token as text: the word-end marker becomes nothing (``photo</w>`` -> ``photo``)."""
    tok = bpe_tokenizer()
    raw = tok.decoder[int(token_id)]
    return bytearray(tok.byte_decoder[c] for c in raw).decode("utf-8", errors="replace").replace("</w>", "")


def vocabulary(clip: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """(token ids, their embedding rows (V, W)) of the backbone's vocabulary, start/end tokens left out."""
    emb = clip.token_embedding
    weight = emb.weight.detach().float()
    if hasattr(emb, "lookup"):  # compact table: the ids it maps to a row of their own (row 0: unknown ids)
        ids = torch.nonzero(emb.lookup).flatten()
        rows = weight[emb.lookup[ids]]
    else:
        ids = torch.arange(weight.shape[0])
        rows = weight
    keep = (ids != sot_id()) & (ids != eot_id())
    return ids[keep], rows[keep]


def context_vectors(method: Any) -> list[tuple[str, torch.Tensor]]:
    """(position label, vector) of every learned layer-0 text context vector of ``method``."""
    ctx = getattr(method.text, "ctx", None)
    if not isinstance(ctx, torch.Tensor):
        raise ConfigError(
            f"method {method.name!r} learns no text context vectors",
            hint="--words reads the learned text context of coop, cocoop, ivlp, maple, promptsrc, kgcoop, restore_*",
        )
    ctx = ctx.detach().float()
    if ctx.dim() == 2:
        return [(f"ctx {i + 1}", v) for i, v in enumerate(ctx)]
    names = list(method.classnames) if len(method.classnames) == ctx.shape[0] else [str(c) for c in range(len(ctx))]
    return [(f"class {names[c]} ctx {i + 1}", v) for c in range(ctx.shape[0]) for i, v in enumerate(ctx[c])]


def nearest_words(method: Any, k: int = 5) -> list[ContextWords]:
    """For each learned context vector, the ``k`` nearest vocabulary tokens (Euclidean), nearest first."""
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_WORDS:
        raise ConfigError(f"--words {k!r} is not from 1 to {MAX_WORDS}", hint="the number of words per vector")
    ids, rows = vocabulary(method.clip)
    vectors = context_vectors(method)
    k = min(k, len(ids))
    stacked = torch.stack([v.to(rows.device) for _, v in vectors])
    dist = torch.cdist(stacked, rows, compute_mode="donot_use_mm_for_euclid_dist")  # (N, V), no cancellation
    values, index = dist.topk(k, dim=1, largest=False)
    return [
        ContextWords(label, [(token_text(int(ids[j])), float(d)) for d, j in zip(values[n], index[n], strict=True)])
        for n, (label, _) in enumerate(vectors)
    ]
