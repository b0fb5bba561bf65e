"""Every trainable method: the loss falls under SGD, exactly its own parameters learn, the backbone never moves.

The expected learnable parameters are named per method (with their shapes on the tiny backbone, whose 3
layers cap the papers' depths of 9 and 12): they follow from each released trainer's ``requires_grad``
selection, e.g. MaPLe trains its text context, the deeper text prompts and the couplings, nothing else.
"""

from __future__ import annotations

import pytest
import torch

from restore.methods import build_method, make_config, method_names
from tests.methods.conftest import CLASSNAMES, loss_of, sgd, train_steps

T, V, E = 32, 64, 32  # tiny text width, vision width, embedding dim

_TEXT_DEEP = {"text.deep.0": (4, T), "text.deep.1": (4, T)}
_VISION_DEEP4 = {f"vision.prompts.{i}": (4, V) for i in range(3)}

EXPECTED: dict[str, dict[str, tuple[int, ...]]] = {
    # CoOp: 16 random context tokens, nothing else.
    "coop": {"text.ctx": (16, T)},
    # KgCoOp trains only names containing "ctx": 4 tokens from "a photo of a".
    "kgcoop": {"text.ctx": (4, T)},
    # CoCoOp: 4 context tokens and the meta-net embed_dim -> embed_dim/16 -> text width.
    "cocoop": {
        "text.ctx": (4, T),
        "text.meta_net.0.weight": (E // 16, E),
        "text.meta_net.0.bias": (E // 16,),
        "text.meta_net.2.weight": (T, E // 16),
        "text.meta_net.2.bias": (T,),
    },
    # VPT-deep: 8 vision tokens at every layer; the text is hand-written.
    "vpt": {f"vision.prompts.{i}": (8, V) for i in range(3)},
    # Language-only deep prompts: 4 text tokens at every layer.
    "deep_text": {"text.ctx": (4, T), **_TEXT_DEEP},
    # IVLP and PromptSRC: 4 + 4 independent tokens per prompted layer.
    "ivlp": {"text.ctx": (4, T), **_TEXT_DEEP, **_VISION_DEEP4},
    "promptsrc": {"text.ctx": (4, T), **_TEXT_DEEP, **_VISION_DEEP4},
    # MaPLe: 2 text tokens per layer and one coupling (text width -> vision width) per layer.
    "maple": {
        "text.ctx": (2, T),
        "text.deep.0": (2, T),
        "text.deep.1": (2, T),
        "vision.proj.weight": (V, T),
        "vision.proj.bias": (V,),
        "vision.deep_proj.0.weight": (V, T),
        "vision.deep_proj.0.bias": (V,),
        "vision.deep_proj.1.weight": (V, T),
        "vision.deep_proj.1.bias": (V,),
    },
}
# TCP: 4 random context tokens and the TKE embed_dim -> embed_dim/4 -> 4 tokens of the text width.
EXPECTED["tcp"] = {
    "text.ctx": (4, T),
    "text.tke.0.weight": (E // 4, E),
    "text.tke.0.bias": (E // 4,),
    "text.tke.2.weight": (4 * T, E // 4),
    "text.tke.2.bias": (4 * T,),
}
# RESTORE: its base method's parameters plus the two surgery adapters (LN, up 4x, down) on the 32-d features.
_SURGERY = {
    f"{side}_adapter.{name}": shape
    for side in ("image", "text")
    for name, shape in (
        ("ln.weight", (E,)), ("ln.bias", (E,)), ("up.weight", (4 * E, E)), ("up.bias", (4 * E,)),
        ("down.weight", (E, 4 * E)), ("down.bias", (E,)),
    )
}  # fmt: skip
EXPECTED["restore_m"] = {**EXPECTED["maple"], **_SURGERY}
EXPECTED["restore_p"] = {**EXPECTED["promptsrc"], **_SURGERY}
EXPECTED["restore_ivlp"] = {**EXPECTED["ivlp"], **_SURGERY}
# CLIP-LoRA: rank-2 (A, B) on q, k, v of every block of both towers (tiny: 3 layers each).
EXPECTED["clip_lora"] = {
    f"lora.{tower}.{layer}.{m}.{t}": (2, w) if m == "A" else (w, 2)
    for tower, w in (("vision", V), ("text", T))
    for layer in range(3)
    for m in ("A", "B")
    for t in ("q", "k", "v")
}
EXPECTED["restore_lora"] = {**EXPECTED["clip_lora"], **_SURGERY}
# B = 0 at the start makes the loss's gradient in A exactly zero at the first step (it flows once B moves).
ZERO_FIRST_GRAD = {"clip_lora": ".A.", "restore_lora": ".A."}
# DePT: its base method's parameters plus the CAT head: a channel transform per modality and a linear head over
# the 5 training classes, on the 32-d features.
_DEPT = {
    **{f"dept_head.{side}.{name}": (E,) for side in ("image", "text") for name in ("scale", "bias")},
    "dept_head.linear.weight": (len(CLASSNAMES), E),
    "dept_head.linear.bias": (len(CLASSNAMES),),
}
EXPECTED["dept_coop"] = {**EXPECTED["coop"], **_DEPT}
EXPECTED["dept_maple"] = {**EXPECTED["maple"], **_DEPT}
EXPECTED["dept_promptsrc"] = {**EXPECTED["promptsrc"], **_DEPT}
# MMRL: 5 shared 512-d tokens, one map per representation layer and tower (rep_start 6 capped at the tiny
# model's last block: one layer), and the projection of the image representation tokens.
EXPECTED["mmrl"] = {
    "rep.tokens": (5, 512),
    "rep.to_text.0.weight": (T, 512),
    "rep.to_text.0.bias": (T,),
    "rep.to_vision.0.weight": (V, 512),
    "rep.to_vision.0.bias": (V,),
    "rep.proj_rep": (V, E),
}
EXPECTED["restore_mmrl"] = {**EXPECTED["mmrl"], **_SURGERY}

TRAINABLE = [n for n in method_names() if n != "zeroshot"]
STEPS = 3
# SGD learning rates for the tiny random model. KgCoOp's term is zero at its initialisation and grows
# quadratically, so a large first step overshoots; CoCoOp's meta-net needs a larger one to move in 4 steps.
# LoRA's B starts at zero, so its first step only moves B: a larger step lets 4 of them lower the loss.
LR = {"kgcoop": 1e-3, "cocoop": 2e-2, "clip_lora": 2e-2, "restore_lora": 2e-2}
# PromptSRC's 60-template teacher costs seconds on this machine and changes nothing here (test_promptsrc
# checks the teacher itself).
OVERRIDES = {
    "promptsrc": {"teacher_templates": "a photo of a {}."},
    "dept_promptsrc": {"teacher_templates": "a photo of a {}."},
}


def test_every_trainable_method_names_its_learnable_parameters():
    missing = sorted(set(TRAINABLE) - set(EXPECTED))
    assert not missing, f"add the expected learnable parameters of {missing} to EXPECTED"


@pytest.mark.parametrize("name", TRAINABLE)
def test_training_moves_only_the_method_parameters(name, tiny_clip, images, labels):
    """Exactly the expected parameters require and receive gradients and move; the loss falls; the frozen
    backbone stays bitwise the same."""
    torch.manual_seed(0)
    method = build_method(make_config(name, OVERRIDES.get(name)), tiny_clip, CLASSNAMES).train()
    trainable = {k: tuple(p.shape) for k, p in method.named_parameters() if p.requires_grad}
    assert trainable == EXPECTED[name]
    backbone = {k: v.clone() for k, v in tiny_clip.state_dict().items()}
    start = {k: p.detach().clone() for k, p in method.named_parameters() if p.requires_grad}

    lr = LR.get(name, 2e-3)
    opt = sgd(method, lr)
    first = loss_of(method, images, labels)
    first.backward()
    for k, p in method.named_parameters():
        if k in trainable and name in ZERO_FIRST_GRAD and ZERO_FIRST_GRAD[name] in k:
            assert p.grad is not None and float(p.grad.abs().sum()) == 0, f"{k}: B = 0 gives no gradient yet"
        elif k in trainable:
            assert p.grad is not None and float(p.grad.abs().sum()) > 0, f"{k} received no gradient"
        else:
            assert p.grad is None, f"frozen {k} received a gradient"
    opt.step()
    moved = {k for k, p in method.named_parameters() if k in start and not torch.equal(start[k], p.detach())}
    assert moved == set(trainable)

    losses = [float(first.detach()), *train_steps(method, images, labels, steps=STEPS, lr=lr, opt=opt)]
    final = float(loss_of(method, images, labels).detach())
    assert final < losses[0] - 1e-3, f"{name}: loss {losses[0]:.4f} -> {final:.4f} (steps: {losses})"

    after = tiny_clip.state_dict()
    changed = [k for k in backbone if not torch.equal(backbone[k], after[k])]
    assert not changed, f"backbone tensors changed: {changed[:5]}"
    assert not any(p.requires_grad for p in tiny_clip.parameters())
    assert all(p.grad is None for p in tiny_clip.parameters())


def test_zeroshot_has_nothing_to_learn(tiny_clip):
    method = build_method("zeroshot", tiny_clip, CLASSNAMES)
    assert method.learnable_parameters() == []
    assert method.learnable_state_dict() == {}
