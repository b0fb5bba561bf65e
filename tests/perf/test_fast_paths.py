"""Each fast path of the backbone against the plain computation it replaces, on the tiny architecture.

Packed text (each distinct prefix once), the pruned last block (only the rows that are read), chunked text and
chunk-level activation checkpointing: features, per-layer shifts and gradients agree to 1e-5.
"""

from __future__ import annotations

import pytest
import torch

from restore.clip import ShiftRequest, tokenize
from restore.clip.packing import pack_text
from tests.perf.conftest import CLASSES, rel_err

TOL = 1e-5
SENTENCES = [f"a photo of a {c.replace('_', ' ')}." for c in CLASSES]
SHIFTS = {
    "no shift": None,
    "shift": ShiftRequest(),
    "detached": ShiftRequest(detach=True),
    "hidden prompts": ShiftRequest(hide_prompts=True),
}


def text_prompts(depth: int, width: int = 32, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [(0.3 * torch.randn(2, width, generator=g)).requires_grad_() for _ in range(depth)]


def run_text(clip, prompts, shift, **settings):
    """Features, shifts and gradients of a loss that uses all of them, under the given model settings."""
    saved = {k: getattr(clip, k) for k in ("text_packing", "text_chunk")}
    saved_t = {k: getattr(clip.transformer, k) for k in ("prune_last_block", "grad_checkpointing")}
    try:
        for k, v in settings.items():
            setattr(clip.transformer if k in saved_t else clip, k, v)
        out = clip.forward_text(tokenize(SENTENCES), prompts, shift)
        loss = out.features.square().sum()
        loss = loss + sum(s.shift_ms.sum() + s.ref_ms.mean() for s in out.shifts if s is not None)
        grads = torch.autograd.grad(loss, prompts)
    finally:
        for k, v in saved.items():
            setattr(clip, k, v)
        for k, v in saved_t.items():
            setattr(clip.transformer, k, v)
    return out, grads


def assert_same(a, b, grads_nonzero: bool = True) -> None:
    (out_a, grads_a), (out_b, grads_b) = a, b
    assert rel_err(out_a.features, out_b.features) < TOL
    assert len(out_a.shifts) == len(out_b.shifts)
    for s, t in zip(out_a.shifts, out_b.shifts, strict=True):
        assert (s is None) == (t is None)
        if s is not None:
            assert s.shift_ms.shape == t.shift_ms.shape == (len(SENTENCES),)
            # relative to the feature scale: with hidden prompts the shift is 0 (or 1e-14 where rounding differs)
            scale = float(t.ref_ms.abs().max())
            assert float((s.shift_ms - t.shift_ms).abs().max()) <= TOL * scale
            assert rel_err(s.ref_ms, t.ref_ms) < TOL
    for g, h in zip(grads_a, grads_b, strict=True):
        if grads_nonzero:
            assert float(h.abs().max()) > 0
        # (hidden prompts act only past the measured layers: some gradients are exactly 0, and must stay so)
        assert float((g - h).abs().max()) <= TOL * float(h.abs().max())


PLAIN = dict(text_packing=False, prune_last_block=False)


# --- the packed layout ---------------------------------------------------------------------------------------
def test_packing_keeps_one_node_per_distinct_prefix():
    tokens = tokenize(SENTENCES)
    packed = pack_text(tokens, (1, 3))
    eot = tokens.argmax(-1)
    length = int(eot.max()) + 1
    assert packed.paths.shape == (len(SENTENCES), length)
    # every prompt is read back from its path (the shared prompt positions 1, 2 are overwritten anyway)
    grid = packed.tokens[packed.paths]
    keep = packed.valid.clone()
    keep[:, 1:3] = False
    assert torch.equal(grid[keep], tokens[:, :length][keep])
    assert torch.equal(packed.positions[packed.paths][packed.valid], torch.arange(length).expand_as(grid)[packed.valid])
    # one node per distinct prefix, computed independently
    prefixes = {
        tuple(-1 if 1 <= i < 3 else t for i, t in enumerate(row[: e + 1]))[:p]
        for row, e in zip(tokens.tolist(), eot.tolist(), strict=True)
        for p in range(1, e + 2)
    }
    assert packed.n_nodes == len(prefixes) < int((eot + 1).sum())
    # each node's owner is one of its occurrences; each prompt ends at its end-of-text node
    assert torch.equal(packed.paths.reshape(-1)[packed.owner], torch.arange(packed.n_nodes))
    assert torch.equal(packed.tokens[packed.eot], tokens[torch.arange(len(SENTENCES)), eot])


def test_packing_is_cached_per_token_batch(clip):
    tokens = tokenize(SENTENCES)
    a = clip._packing(tokens, (1, 3))
    assert clip._packing(tokens.clone(), (1, 3)) is a
    assert clip._packing(tokens[:3], (1, 3)) is not a
    assert clip._packing(tokens, None) is not a


# --- text: packed and pruned against padded ------------------------------------------------------------------
@pytest.mark.parametrize("shift", list(SHIFTS.values()), ids=list(SHIFTS))
@pytest.mark.parametrize("depth", [3, 2], ids=["all layers prompted", "last layer free"])
def test_packed_text_equals_padded(clip, shift, depth):
    prompts = text_prompts(depth)
    hidden = shift is not None and shift.hide_prompts
    assert_same(run_text(clip, prompts, shift), run_text(clip, prompts, shift, **PLAIN), grads_nonzero=not hidden)


def test_packed_text_without_prompts_equals_padded(clip):
    tokens = tokenize(SENTENCES)
    with torch.no_grad():
        packed = clip.encode_text(tokens)
        clip.text_packing = False
        plain = clip.encode_text(tokens)
    assert rel_err(packed, plain) < TOL


def test_per_prompt_context_takes_the_padded_path(clip):
    """CoCoOp's per-sentence contexts cannot be shared: the padded path runs, with the same result."""
    tokens = tokenize(SENTENCES)
    ctx = (0.3 * torch.randn(len(SENTENCES), 2, 32)).requires_grad_()
    a = clip.forward_text(tokens, [ctx]).features
    clip.text_packing = False
    b = clip.forward_text(tokens, [ctx]).features
    assert torch.equal(a, b)


def test_pruned_last_block_equals_full_text_block(clip):
    prompts = text_prompts(2)
    pruned = run_text(clip, prompts, None, text_packing=False)
    assert_same(pruned, run_text(clip, prompts, None, **PLAIN))


@pytest.mark.parametrize("depth", [0, 2])
def test_pruned_last_block_equals_full_vision_block(clip, depth):
    g = torch.Generator().manual_seed(0)
    images = torch.randn(3, 3, 32, 32, generator=g)
    prompts = [torch.randn(2, 64, generator=g).requires_grad_() for _ in range(depth)]
    results = []
    for prune in (True, False):
        clip.visual.transformer.prune_last_block = prune
        feats = clip.forward_image(images, prompts).features
        grads = torch.autograd.grad(feats.square().sum(), prompts) if prompts else ()
        results.append((feats, grads))
    (a, ga), (b, gb) = results
    assert rel_err(a, b) < TOL
    for g1, g2 in zip(ga, gb, strict=True):
        assert rel_err(g1, g2) < TOL


# --- chunks and checkpointing --------------------------------------------------------------------------------
@pytest.mark.parametrize("chunk", [2, 3])
@pytest.mark.parametrize("checkpointing", [False, True], ids=["kept", "checkpointed"])
@pytest.mark.parametrize("packing", [True, False], ids=["packed", "padded"])
def test_chunked_text_equals_whole(clip, chunk, checkpointing, packing):
    prompts = text_prompts(3)
    shift = ShiftRequest()
    whole = run_text(clip, prompts, shift, **PLAIN)
    chunked = run_text(clip, prompts, shift, text_chunk=chunk, grad_checkpointing=checkpointing, text_packing=packing)
    assert_same(chunked, whole)


def saved_bytes(fn) -> int:
    """Bytes autograd keeps for the backward pass while ``fn`` runs (tensors saved outside checkpoints)."""
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return total


def test_chunk_checkpointing_keeps_only_chunk_inputs_for_backward(clip):
    prompts = text_prompts(3)
    tokens = tokenize(SENTENCES * 4)

    def forward():
        out = clip.forward_text(tokens, prompts, ShiftRequest())
        return out.features.square().sum() + sum(s.shift_ms.sum() for s in out.shifts if s is not None)

    kept = saved_bytes(forward)
    clip.text_chunk = 7
    clip.transformer.grad_checkpointing = True
    checkpointed = saved_bytes(forward)
    assert checkpointed < kept / 4
    # and the gradients are those of the plain run
    g1 = torch.autograd.grad(forward(), prompts)
    clip.text_chunk = 0
    clip.transformer.grad_checkpointing = False
    g2 = torch.autograd.grad(forward(), prompts)
    for a, b in zip(g1, g2, strict=True):
        assert rel_err(a, b) < TOL


# --- torch.compile -------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_compiled_block_tails_equal_eager(clip):
    from restore.clip.model import compile_blocks

    prompts = text_prompts(3)
    eager = run_text(clip, prompts, ShiftRequest())
    compile_blocks(clip)
    assert "_tail" in clip.transformer.resblocks[0].__dict__
    assert_same(run_text(clip, prompts, ShiftRequest()), eager)
