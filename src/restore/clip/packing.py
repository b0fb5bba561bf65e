"""Class prompts as the set of their distinct prefixes, so the causal text tower computes each token once.

With a causal mask a token's output depends only on the tokens up to it. Class prompts share long prefixes
("<start> a photo of a ...", the learnable context at the same positions), and everything after a prompt's
end-of-text token is padding nobody reads. Packing keeps one *node* per distinct prefix (a trie): the linear
layers, the MLP and the feature shift run on nodes only; attention gathers each prompt's path of nodes into a
(prompts, length) grid, where the usual causal mask applies, and takes each node's output from one of its
occurrences. The result equals the padded computation up to float rounding (tests/perf).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass(eq=False)
class PackedText:
    tokens: Tensor  # (N,) token id of each node
    positions: Tensor  # (N,) its position in the sequence
    paths: Tensor  # (S, L) the node at each position of each prompt (positions past its end repeat node 0)
    valid: Tensor  # (S, L) position <= the prompt's end-of-text token
    owner: Tensor  # (N,) index into the flattened (S * L) grid of one occurrence of each node
    eot: Tensor  # (S,) the node of each prompt's end-of-text token
    _slots: dict[tuple[int, int], tuple[Tensor, Tensor]] = field(default_factory=dict, repr=False)
    _free: dict[tuple[int, int], tuple[Tensor, Tensor]] = field(default_factory=dict, repr=False)

    @property
    def n_nodes(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def length(self) -> int:
        return int(self.paths.shape[1])

    def prompt_slots(self, region: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """(nodes, slot) for every node at a position in ``region``: node i takes prompt token slot[i]."""
        if region not in self._slots:
            inside = (self.positions >= region[0]) & (self.positions < region[1])
            nodes = inside.nonzero().squeeze(1)
            self._slots[region] = (nodes, self.positions[nodes] - region[0])
        return self._slots[region]

    def free_nodes(self, region: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """(nodes outside ``region``, (S, L) mask of the grid cells that count in a prompt's shift)."""
        if region not in self._free:
            outside = (self.positions < region[0]) | (self.positions >= region[1])
            pos = torch.arange(self.length, device=self.paths.device)
            cells = self.valid & ((pos < region[0]) | (pos >= region[1]))[None, :]
            self._free[region] = (outside.nonzero().squeeze(1), cells)
        return self._free[region]


def pack_text(tokens: Tensor, shared: tuple[int, int] | None = None) -> PackedText:
    """The trie of ``tokens`` (S, context) up to each end-of-text token (the highest id, OpenAI's convention).

    ``shared``: positions [a, b) that a shared (not per-prompt) prompt overwrites before the first block, so
    their token ids do not matter and prompts differing only there share their nodes.
    """
    eot = tokens.argmax(dim=-1)
    rows = tokens.tolist()
    ends = eot.tolist()
    s_count, length = len(rows), max(ends) + 1
    ids: dict[tuple[int, int], int] = {}
    node_tok: list[int] = []
    node_pos: list[int] = []
    owner: list[int] = []
    paths = [[0] * length for _ in range(s_count)]
    a, b = shared if shared is not None else (0, 0)
    for s, (row, end) in enumerate(zip(rows, ends, strict=True)):
        parent = -1
        path = paths[s]
        for pos in range(end + 1):
            tok = -1 if a <= pos < b else row[pos]
            key = (parent, tok)
            node = ids.get(key)
            if node is None:
                node = ids[key] = len(node_tok)
                node_tok.append(row[pos])
                node_pos.append(pos)
                owner.append(s * length + pos)
            path[pos] = node
            parent = node
    device = tokens.device
    positions = torch.arange(length)
    return PackedText(
        tokens=torch.tensor(node_tok, dtype=torch.long, device=device),
        positions=torch.tensor(node_pos, dtype=torch.long, device=device),
        paths=torch.tensor(paths, dtype=torch.long, device=device),
        valid=(positions[None, :] <= eot.cpu()[:, None]).to(device),
        owner=torch.tensor(owner, dtype=torch.long, device=device),
        eot=torch.tensor([paths[s][e] for s, e in enumerate(ends)], dtype=torch.long, device=device),
    )
