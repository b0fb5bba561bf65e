"""CLIP-LoRA: the adapted projection, zero-shot at the start, exactly its adapters learn, checkpoints, the
shift of a LoRA block (two passes by hand) and RESTORE's regulariser on it."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from restore.clip.model import ShiftRequest
from restore.errors import ConfigError
from restore.methods import build_method, make_config
from restore.methods.feature_shift import activation_shifts
from tests.methods.conftest import CLASSNAMES, loss_of

NO_DROPOUT = {"dropout": 0.0}


def _randomise(method, seed: int = 1, std: float = 0.3) -> None:
    """Non-zero B everywhere (a trained state): the adapters then change every adapted block."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in method.lora.named_parameters():
            if ".B." in f".{name}.":
                p.copy_(torch.randn(p.shape, generator=g) * std)


def test_defaults_are_the_release_s(tiny_clip):
    cfg = make_config("clip_lora")
    assert (cfg.rank, cfg.alpha, cfg.dropout, cfg.targets, cfg.position, cfg.encoder) == (
        2, 1.0, 0.25, ["q", "k", "v"], "all", "both",
    )  # fmt: skip
    method = build_method(cfg, tiny_clip, CLASSNAMES)
    # every layer of both towers (tiny: 3 each), one (A, B) pair per q, k, v
    assert method.lora.layers("vision") == [0, 1, 2] and method.lora.layers("text") == [0, 1, 2]
    a = method.lora.vision["0"]
    assert a.scale == pytest.approx(1 / math.sqrt(2))
    assert set(a.A) == {"q", "k", "v"} and tuple(a.A["q"].shape) == (2, 64) and tuple(a.B["q"].shape) == (64, 2)
    assert all(float(b.abs().sum()) == 0 for b in a.B.values())


def test_adapted_projection_equals_w_plus_scaled_ba(tiny_clip):
    """Each projection computes (W + scale·B·A) h, checked against the fused weight built by hand."""
    method = build_method(make_config("clip_lora", {**NO_DROPOUT, "targets": ["q", "v", "o"]}), tiny_clip, CLASSNAMES)
    _randomise(method)
    lora = method.lora.vision["1"]
    attn = tiny_clip.visual.transformer.resblocks[1].attn
    d = attn.in_proj_weight.shape[1]
    h = torch.randn(2, 5, d)
    scale = 1.0 / math.sqrt(2)
    delta = {t: scale * lora.B[t] @ lora.A[t] for t in ("q", "v", "o")}
    w = attn.in_proj_weight.detach().clone()
    w[:d] += delta["q"]
    w[2 * d :] += delta["v"]  # k is not adapted
    expected_qkv = h @ w.t() + attn.in_proj_bias
    expected_out = h @ (attn.out_proj.weight + delta["o"]).t() + attn.out_proj.bias
    with method.tuned_backbone():
        got_qkv = attn.in_proj(h)
        got_kv = attn.in_proj(h, "kv")
        got_out = attn.project(h)
    torch.testing.assert_close(got_qkv, expected_qkv, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_kv, expected_qkv[..., d:], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_out, expected_out, rtol=1e-5, atol=1e-5)
    # outside the method's forward the shared backbone is the frozen CLIP
    assert attn.delta is None
    torch.testing.assert_close(attn.in_proj(h), h @ attn.in_proj_weight.t() + attn.in_proj_bias)


def test_b_zero_gives_zero_shot_logits_exactly(tiny_clip, images):
    """B = 0 at the start: the logits are those of zero-shot CLIP with the same template, bit for bit."""
    lora = build_method(make_config("clip_lora", {"templates": "a photo of a {}."}), tiny_clip, CLASSNAMES)
    zs = build_method(make_config("zeroshot", {"templates": "a photo of a {}."}), tiny_clip, CLASSNAMES)
    lora.train()  # dropout active: its masks multiply B = 0, so nothing changes
    assert torch.equal(lora(images).logits, zs.predict(images))
    lora.eval()
    assert torch.equal(lora.predict(images, lora.class_features()), zs.predict(images, zs.class_features()))


def test_other_methods_are_bit_identical_beside_a_lora_method(tiny_clip, images):
    """A CLIP-LoRA model with trained adapters on the same CLIP object leaves every other method's logits
    and the backbone's state exactly as they were."""
    before = {n: build_method(n, tiny_clip, CLASSNAMES) for n in ("maple", "zeroshot")}
    logits = {n: m.eval().predict(images) for n, m in before.items()}
    state = {k: v.clone() for k, v in tiny_clip.state_dict().items()}
    method = build_method(make_config("clip_lora", NO_DROPOUT), tiny_clip, CLASSNAMES)
    _randomise(method)
    changed = method.eval().predict(images)
    assert not torch.equal(changed, logits["zeroshot"])  # the adapters act inside the method ...
    for name, m in before.items():  # ... and nowhere else
        assert torch.equal(m.predict(images), logits[name])
    assert all(torch.equal(v, tiny_clip.state_dict()[k]) for k, v in state.items())
    assert not any(k.startswith("clip.") for k in method.learnable_state_dict())


def test_gradients_reach_exactly_the_adapters(tiny_clip, images, labels):
    method = build_method(make_config("clip_lora", NO_DROPOUT), tiny_clip, CLASSNAMES).train()
    _randomise(method)
    loss_of(method, images, labels).backward()
    grads = {n for n, p in method.named_parameters() if p.grad is not None and float(p.grad.abs().sum()) > 0}
    expected = {n for n, _ in method.named_parameters() if n.startswith("lora.")}
    assert grads == expected and len(expected) == 2 * 3 * 3 * 2  # towers x layers x (q, k, v) x (A, B)
    assert all(p.grad is None for p in tiny_clip.parameters())


def test_checkpoint_round_trip(tiny_clip, images):
    cfg = make_config("clip_lora", NO_DROPOUT)
    method = build_method(cfg, tiny_clip, CLASSNAMES)
    _randomise(method)
    state = method.learnable_state_dict()
    assert state and all(k.startswith("lora.") for k in state)
    fresh = build_method(cfg, tiny_clip, CLASSNAMES)
    assert not torch.equal(fresh.eval().predict(images), method.eval().predict(images))
    fresh.load_learnable_state_dict(state)
    assert torch.equal(fresh.predict(images), method.predict(images))


def _block_by_hand(block, x, delta, causal: bool):
    """A pre-norm CLIP block written out, with ΔW (d, 3d rows) added to the fused projection or not."""
    attn = block.attn
    d = x.shape[-1]
    h = F.layer_norm(x, (d,), block.ln_1.weight, block.ln_1.bias, block.ln_1.eps)
    w = attn.in_proj_weight + (delta if delta is not None else 0)
    q, k, v = (h @ w.t() + attn.in_proj_bias).split(d, dim=-1)
    heads, hd = attn.heads, d // attn.heads

    def split(t):
        return t.view(*t.shape[:-1], heads, hd).transpose(-3, -2)

    scores = split(q) @ split(k).transpose(-1, -2) / math.sqrt(hd)
    if causal:
        n = x.shape[-2]
        scores = scores.masked_fill(~torch.ones(n, n, dtype=torch.bool).tril(), float("-inf"))
    z = (scores.softmax(-1) @ split(v)).transpose(-3, -2).reshape(x.shape)
    y = x + attn.out_proj(z)
    return y + block.mlp(F.layer_norm(y, (d,), block.ln_2.weight, block.ln_2.bias, block.ln_2.eps))


def _recorder(store: dict[int, torch.Tensor], key: int):
    """A forward hook that keeps a block's first input (and leaves its output alone)."""

    def hook(module, args, output) -> None:
        store.setdefault(key, args[0])

    return hook


def _fused_delta(lora_attention, d: int) -> torch.Tensor:
    parts = [lora_attention.weight_delta(t) if t in lora_attention.targets else torch.zeros(d, d) for t in "qkv"]
    return torch.cat(parts)


def test_lora_block_shift_is_zero_at_start(tiny_clip, images):
    method = build_method(make_config("clip_lora"), tiny_clip, CLASSNAMES).train()
    out = method(images, shift=ShiftRequest())
    assert len([s for s in out.vision_shifts if s is not None]) == 3
    assert len([s for s in out.text_shifts if s is not None]) == 3
    for s in (*out.vision_shifts, *out.text_shifts):
        assert torch.equal(s.shift_ms, torch.zeros_like(s.shift_ms))
        assert float(s.ref_ms.min()) > 0


@pytest.mark.parametrize("tower", ["vision", "text"])
def test_lora_block_shift_equals_two_passes_by_hand(tiny_clip, images, tower):
    """Ω = Φ_{W+ΔW}(X) − Φ_W(X) of every LoRA block against the block run twice by hand on the input the
    tower gives it (hooks record each block's input)."""
    method = build_method(make_config("clip_lora", NO_DROPOUT), tiny_clip, CLASSNAMES).eval()
    _randomise(method)
    tiny_clip.text_packing = tower == "text"  # the packed text path measures the shift as well
    blocks = tiny_clip.visual.transformer.resblocks if tower == "vision" else tiny_clip.transformer.resblocks
    inputs: dict[int, torch.Tensor] = {}
    hooks = [b.register_forward_hook(_recorder(inputs, i)) for i, b in enumerate(blocks)]
    with torch.no_grad():
        out = method(images, shift=ShiftRequest())
    for hk in hooks:
        hk.remove()
    shifts = out.vision_shifts if tower == "vision" else out.text_shifts
    holder = method.lora.vision if tower == "vision" else method.lora.text
    for i, block in enumerate(blocks):
        x = inputs[i]
        delta = _fused_delta(holder[str(i)], x.shape[-1])
        if tower == "vision":
            with torch.no_grad():
                omega = _block_by_hand(block, x, delta, False) - _block_by_hand(block, x, None, False)
                free = _block_by_hand(block, x, None, False)
            expected = omega.pow(2).sum(-1).mean(1)
            expected_ref = free.pow(2).sum(-1).mean(1)
        else:  # the text tower ran packed: rebuild each class prompt's own sequence and count its real tokens
            tiny_clip.text_packing = False
            seq: dict[int, torch.Tensor] = {}
            hook = block.register_forward_hook(_recorder(seq, 0))
            with torch.no_grad(), method.tuned_backbone():
                tiny_clip.forward_text(method.tokens)
            hook.remove()
            x = seq[0]
            with torch.no_grad():
                omega = _block_by_hand(block, x, delta, True) - _block_by_hand(block, x, None, True)
                free = _block_by_hand(block, x, None, True)
            eot = method.tokens.argmax(-1)
            counted = (torch.arange(x.shape[1])[None, :] <= eot[:, None]).float()
            expected = (omega.pow(2).sum(-1) * counted).sum(1) / counted.sum(1)
            expected_ref = (free.pow(2).sum(-1) * counted).sum(1) / counted.sum(1)
            tiny_clip.text_packing = True
        assert float(expected.min()) > 0
        torch.testing.assert_close(shifts[i].shift_ms, expected, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(shifts[i].ref_ms, expected_ref, rtol=1e-4, atol=1e-5)


def test_restore_lora_trains_lora_and_surgery_with_the_lora_shift(tiny_clip, images, labels):
    method = build_method(make_config("restore_lora", NO_DROPOUT), tiny_clip, CLASSNAMES).train()
    _randomise(method)
    assert method.restore_settings["shift_measure"] == "activation"
    out = method(images)  # training measures the shift of every LoRA block
    vision, text = method.shift_measure(out)
    assert sorted(vision) == [0, 1, 2] and sorted(text) == [0, 1, 2]
    expected_v = activation_shifts(out.vision_shifts)
    assert all(torch.equal(vision[i], expected_v[i]) for i in vision)
    total, logs = method.compute_loss(out, labels)
    assert logs["fs"] > 0
    total.backward()
    grads = {n for n, p in method.named_parameters() if p.grad is not None and float(p.grad.abs().sum()) > 0}
    expected = {n for n, _ in method.named_parameters() if n.startswith(("lora.", "image_adapter.", "text_adapter."))}
    assert grads == expected
    assert all(p.grad is None for p in tiny_clip.parameters())
    fresh = build_method(make_config("restore_lora", NO_DROPOUT), tiny_clip, CLASSNAMES)
    fresh.load_learnable_state_dict(method.learnable_state_dict())
    assert torch.equal(fresh.eval().predict(images), method.eval().predict(images))


@pytest.mark.parametrize(
    ("values", "what"),
    [
        ({"shift_measure": "parameter"}, "shift_measure: parameter"),
        ({"recipe": "released"}, "shift_measure: parameter"),
    ],
)
def test_restore_lora_refuses_the_prompt_gram_measure(tiny_clip, values, what):
    with pytest.raises(ConfigError) as err:
        build_method(make_config("restore_lora", values), tiny_clip, CLASSNAMES)
    assert err.value.hint and err.value.message == (
        f"RESTORE's {what} reads the Gram norm of deep prompts, which 'restore_lora' does not have"
    )


def test_restore_lora_needs_both_towers(tiny_clip):
    with pytest.raises(ConfigError) as err:
        build_method(make_config("restore_lora", {"encoder": "vision"}), tiny_clip, CLASSNAMES)
    assert err.value.message == "RESTORE needs a base method that tunes both towers; 'restore_lora' tunes vision"


def test_lora_block_shift_with_token_sampling_reweights_the_sampled_tokens(tiny_clip, images):
    """``token_fraction`` < 1: the free branch runs on CLS plus a random sample of the other tokens, each
    standing for (n - 1) / m tokens — the estimate computed by hand from the same draws."""
    method = build_method(make_config("clip_lora", NO_DROPOUT), tiny_clip, CLASSNAMES).eval()
    _randomise(method)
    blocks = tiny_clip.visual.transformer.resblocks
    inputs: dict[int, torch.Tensor] = {}
    hooks = [b.register_forward_hook(_recorder(inputs, i)) for i, b in enumerate(blocks)]
    request = ShiftRequest(fraction=0.5, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        shifts = method(images, shift=request).vision_shifts
    for hk in hooks:
        hk.remove()
    draws = torch.Generator().manual_seed(3)
    for i, block in enumerate(blocks):
        x = inputs[i]
        n = x.shape[1]
        m = max(1, round(0.5 * (n - 1)))
        picked = torch.randperm(n - 1, generator=draws)[:m].sort().values + 1
        with torch.no_grad():
            delta = _fused_delta(method.lora.vision[str(i)], x.shape[-1])
            omega = _block_by_hand(block, x, delta, False) - _block_by_hand(block, x, None, False)
        sq = omega.pow(2).sum(-1)
        expected = (sq[:, 0] + sq[:, picked].sum(1) * (n - 1) / m) / n
        assert m < n - 1
        torch.testing.assert_close(shifts[i].shift_ms, expected, rtol=1e-4, atol=1e-6)
