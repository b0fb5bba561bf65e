"""``precision: fp16`` as the authors ran it: which tensors end up in half (checked on CPU against lists
written here from the released trainers), LayerNorm in fp32, the lost-update effect of plain SGD on half
tensors, the checkpoint round trip, the CPU refusal, and (CUDA only) a few real training steps."""

from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from restore.clip import build_model, get_config
from restore.clip.model import LayerNorm
from restore.engine.device import autocast, grad_scaler
from restore.engine.precision import cast_for_precision
from restore.engine.run_config import resolve_precision
from restore.engine.train_checkpoint import load_training_checkpoint, save_training_checkpoint
from restore.engine.trainer import Trainer, TrainSettings, check_same_precision
from restore.errors import CheckpointError, ConfigError
from restore.methods import build_method, make_config
from restore.methods.model_file import load_method, save_method
from tests.engine.fakes import Blobs

HALF, FULL = torch.float16, torch.float32
CLASSES = [f"class {c}" for c in "abcdef"]

# OpenAI's convert_weights leaves these CLIP tensors fp32 (they are cast where they are used).
BACKBONE_FP32 = re.compile(
    r"^(token_embedding\.weight|positional_embedding|logit_scale|visual\.class_embedding|visual\.positional_embedding"
    r"|.*ln_(1|2|pre|post|final)\.(weight|bias))$"
)
ADAPTERS = [f"{a}_adapter.{m}.{p}" for a in ("image", "text") for m in ("ln", "up", "down") for p in ("weight", "bias")]
# The learnable tensors each released trainer holds in half under PREC fp16 (see restore.engine.precision).
HALF_LEARNABLE = {
    "coop": ["text.ctx"],
    "cocoop": ["text.ctx", *(f"text.meta_net.{i}.{p}" for i in (0, 2) for p in ("weight", "bias"))],
    "kgcoop": ["text.ctx"],
    "vpt": [],
    "deep_text": ["text.ctx"],
    "ivlp": ["text.ctx"],
    "promptsrc": ["text.ctx"],
    "maple": ["text.ctx", "vision.proj.weight", "vision.proj.bias"],
    "restore_m": ["text.ctx", "vision.proj.weight", "vision.proj.bias", *ADAPTERS],
    "restore_ivlp": ["text.ctx", *ADAPTERS],
}


def _method(name: str, **options):
    torch.manual_seed(0)
    clip = build_model(get_config("tiny")).eval()
    torch.manual_seed(11)
    return build_method(make_config(name, options), clip, CLASSES, "DescribableTextures")


def _images(n: int = 4) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(7))


def test_fp16_puts_the_backbone_in_half_as_convert_weights_does():
    method = cast_for_precision(_method("maple"), "fp16")
    params = dict(method.clip.named_parameters())
    for name in (
        "visual.conv1.weight", "visual.proj", "text_projection", "transformer.resblocks.0.attn.in_proj_weight",
        "transformer.resblocks.0.attn.in_proj_bias", "transformer.resblocks.1.attn.out_proj.weight",
        "visual.transformer.resblocks.2.mlp.c_fc.weight", "visual.transformer.resblocks.2.mlp.c_proj.bias",
    ):  # fmt: skip
        assert params[name].dtype == HALF, name
    for name in ("token_embedding.weight", "logit_scale", "visual.class_embedding", "ln_final.weight"):
        assert params[name].dtype == FULL, name
    wrong = [n for n, p in params.items() if p.dtype != (FULL if BACKBONE_FP32.match(n) else HALF)]
    assert wrong == []
    assert method.clip.dtype == HALF and all(not p.requires_grad for p in method.clip.parameters())


@pytest.mark.parametrize("name", sorted(HALF_LEARNABLE))
def test_fp16_learnable_tensors_are_half_exactly_where_the_authors_trainer_has_them(name):
    method = _method(name)
    before = {n: p for n, p in method.named_parameters() if not n.startswith("clip.")}
    values = {n: p.detach().clone() for n, p in before.items()}
    cast_for_precision(method, "fp16")
    after = {n: p for n, p in method.named_parameters() if not n.startswith("clip.")}
    assert sorted(n for n, p in after.items() if p.dtype == HALF) == sorted(HALF_LEARNABLE[name])
    assert all(p.dtype == FULL for n, p in after.items() if n not in HALF_LEARNABLE[name])
    # The same Parameter objects (an optimiser holding them stays valid), rounded to half.
    assert all(after[n] is before[n] for n in before)
    assert all(torch.equal(after[n].detach(), values[n].to(after[n].dtype)) for n in before)
    assert set(method.learnable_parameters()) == set(after.values())
    if name.startswith("restore"):  # α is state, not a weight: it stays fp32
        assert method.image_adapter.alpha.dtype == FULL


@pytest.mark.parametrize("precision", ["fp32", "amp", "bf16"])
def test_other_precisions_keep_every_weight_fp32(precision):
    method = cast_for_precision(_method("restore_m"), precision)
    assert {p.dtype for p in method.parameters()} == {FULL}


def test_layernorm_normalises_half_inputs_in_fp32():
    torch.manual_seed(1)
    ln = LayerNorm(64)
    with torch.no_grad():
        ln.weight.normal_(1.0, 0.5)
        ln.bias.normal_(0.0, 0.5)
    x = (torch.randn(8, 17, 64) * 20).half()
    y = ln(x)
    assert y.dtype == HALF
    assert torch.equal(y, F.layer_norm(x.float(), (64,), ln.weight, ln.bias, ln.eps).half())
    xf = torch.randn(3, 64)
    assert torch.equal(ln(xf), F.layer_norm(xf, (64,), ln.weight, ln.bias, ln.eps))  # fp32: torch's own path
    half_ln = LayerNorm(64).half()  # the surgery adapters' LayerNorm is half in the released code: torch's path
    assert torch.equal(half_ln(x), F.layer_norm(x, (64,), half_ln.weight, half_ln.bias, half_ln.eps))


def test_every_clip_layernorm_computes_in_fp32_in_a_half_forward():
    method = cast_for_precision(_method("maple"), "fp16")
    seen: list[str] = []

    def check(name):
        def hook(module, inputs, output):
            (x,) = inputs
            assert x.dtype == HALF and module.weight.dtype == FULL, name
            expected = F.layer_norm(x.float(), module.normalized_shape, module.weight, module.bias, module.eps)
            assert torch.equal(output, expected.to(HALF)), name
            seen.append(name)

        return hook

    for name, module in method.clip.named_modules():
        if isinstance(module, torch.nn.LayerNorm):
            module.register_forward_hook(check(name))
    with torch.no_grad():
        out = method.eval()(_images())
    assert {"ln_final", "visual.ln_pre", "visual.ln_post", "transformer.resblocks.0.ln_1"} <= set(seen)
    assert out.logits.dtype == HALF and out.image_features.dtype == HALF and torch.isfinite(out.logits).all()


def test_a_half_forward_computes_what_the_fp32_forward_does():
    full = _method("restore_m").eval()
    half = cast_for_precision(_method("restore_m"), "fp16").eval()
    images = _images()
    with torch.no_grad():
        a, b = full(images).logits, half(images).logits.float()
    assert torch.allclose(a, b, rtol=0, atol=0.05 * a.abs().max())  # fp16 rounding, not another function
    assert not torch.equal(a, b)


def _ulp(value: torch.Tensor) -> torch.Tensor:
    """The spacing of fp16 numbers at each (normal) value: 2^(floor(log2|v|) - 10)."""
    return torch.exp2(torch.floor(torch.log2(value.abs().double())) - 10)


def test_sgd_loses_updates_smaller_than_half_an_fp16_ulp():
    """What the authors' warm-up epoch (lr 1e-5) does to their half parameters: at 0.5 the fp16 spacing is
    2^-11 = 4.9e-4, so a step of 1e-5 rounds back to the same number; an fp32 copy moves."""
    values = torch.tensor([0.5, 0.25, 0.04, 0.03, 0.01, 0.004, 1e-3, -0.04, -0.5])
    lr, grad = 1e-5, torch.ones_like(values)
    half = torch.nn.Parameter(values.half())
    full = torch.nn.Parameter(values.half().float())  # the same starting numbers
    for p in (half, full):
        p.grad = grad.to(p.dtype)
        torch.optim.SGD([p], lr=lr).step()
    lost = (lr * grad).double() < _ulp(values.half()) / 2  # independent of torch's optimiser
    # From |v| >= 2^-5 = 0.03125 on, half the spacing (>= 1.5e-5) exceeds the step: 0.04 loses it, 0.03 not.
    assert lost.tolist() == [True, True, True, False, False, False, False, True, True]
    assert torch.equal(half.detach()[lost], values.half()[lost])  # bit-identical: the update vanished
    assert (half.detach()[~lost] != values.half()[~lost]).all()
    assert (full.detach() != values.half().float()).all()  # fp32 keeps every update
    assert math.isclose(float(_ulp(torch.tensor(0.5))), 2**-11)


WARMUP = {"epochs": 2, "lr": 0.0035, "batch_size": 8, "warmup_epochs": 1, "warmup_lr": 1e-5}
# Half tensors whose values (|w| ~ 0.01-0.2, or 1 for the adapters' LayerNorm) have a half spacing above
# lr 1e-5 times the gradients the tiny model produces.
STUCK = ["vision.proj.weight", "image_adapter.up.weight", "text_adapter.up.weight", "image_adapter.ln.weight"]


def _warmup_epoch(precision: str, device: str = "cpu") -> tuple[dict, dict, Trainer]:
    """restore_m's learnable state before and after the warm-up epoch (lr 1e-5) of the real training loop."""
    method = cast_for_precision(_method("restore_m").to(device), precision)
    before = method.learnable_state_dict()
    trainer = Trainer(method, Blobs(), TrainSettings(**WARMUP, precision=precision), device=device)
    result = trainer.fit(until_epoch=1)
    assert math.isfinite(result.history[0]["loss"])
    return before, method.learnable_state_dict(), trainer


def _kept(before: dict, after: dict, name: str) -> float:
    return (after[name] == before[name]).float().mean().item()


def test_trainer_warmup_epoch_loses_the_updates_of_half_tensors():
    """CPU runs the arithmetic of an fp16 run (a real one is CUDA-only): after the warm-up epoch the half
    tensors of `STUCK` are (all but a few values) bit-identical, where the fp32 run moved most of them."""
    before, after, trainer = _warmup_epoch("fp16")
    assert not trainer.scaler.is_enabled() and trainer.state()["precision"] == "fp16"
    assert all(_kept(before, after, name) > 0.99 for name in STUCK)  # a few values near 0 still move
    assert torch.equal(after["image_adapter.ln.weight"], before["image_adapter.ln.weight"])
    assert _kept(before, after, "text.ctx") < 0.5  # small values (~0.02): their updates survive
    before32, after32, _ = _warmup_epoch("fp32")
    assert all(_kept(before32, after32, name) < 0.7 for name in STUCK)
    # The adapters' LayerNorm weights (1.0, spacing 2^-10) stay put even at lr 0.0035 in fp16.
    trainer.fit()
    final = trainer.method.learnable_state_dict()
    assert torch.equal(final["image_adapter.ln.weight"], before["image_adapter.ln.weight"])
    assert _kept(before, final, "vision.proj.weight") < 1.0


def test_an_fp16_checkpoint_is_stored_fp32_and_reloads_to_identical_logits(tmp_path):
    method = cast_for_precision(_method("restore_m"), "fp16")
    opt = torch.optim.SGD(method.learnable_parameters(), lr=0.05, momentum=0.9)
    method.train()
    for _ in range(2):
        loss, _ = method.compute_loss(method(_images()), torch.tensor([0, 1, 2, 3]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    path = save_method(method, tmp_path / "model.safetensors")
    stored = load_file(str(path))
    state = method.learnable_state_dict()
    assert {v.dtype for v in stored.values()} == {FULL}
    assert all(torch.equal(stored[k], v.float()) for k, v in state.items())  # widening is exact

    torch.manual_seed(0)
    clip = build_model(get_config("tiny")).eval()
    again = cast_for_precision(load_method(path, clip), "fp16")
    assert all(again.state_dict()[k].dtype == v.dtype for k, v in state.items())
    method.eval()
    with torch.no_grad():
        assert torch.equal(again(_images()).logits, method(_images()).logits)


def test_an_fp16_run_resumes_to_the_uninterrupted_result_with_half_momentum(tmp_path):
    s = TrainSettings(epochs=2, lr=0.01, batch_size=8, precision="fp16")
    full = cast_for_precision(_method("maple"), "fp16")
    Trainer(full, Blobs(), s, checkpoint=tmp_path / "a.pt").fit()
    Trainer(cast_for_precision(_method("maple"), "fp16"), Blobs(), s, checkpoint=tmp_path / "b.pt").fit(until_epoch=1)
    saved = load_training_checkpoint(tmp_path / "b.pt")
    assert saved["precision"] == "fp16" and saved["learnable"]["text.ctx"].dtype == HALF
    assert {v["momentum_buffer"].dtype for v in saved["optimizer"]["state"].values()} == {HALF, FULL}
    resumed = cast_for_precision(_method("maple"), "fp16")
    Trainer(resumed, Blobs(), s, checkpoint=tmp_path / "b.pt").fit(resume=True)
    for k, v in full.learnable_state_dict().items():
        assert v.dtype == resumed.learnable_state_dict()[k].dtype and torch.equal(resumed.learnable_state_dict()[k], v)


def test_fp16_and_autocast_need_cuda():
    for precision in ("amp", "bf16"):
        with pytest.raises(ConfigError, match=rf"model.precision={precision} needs a CUDA device \(autocast\)"):
            resolve_precision(precision, "cpu")
    with pytest.raises(ConfigError) as info:
        resolve_precision("fp16", "cpu")
    assert info.value.message == (
        "model.precision=fp16 needs a CUDA device (CLIP and the prompts in half precision); on CPU runs are fp32"
    )
    assert info.value.hint == "set model.precision=auto or fp32, or --device cuda"
    assert resolve_precision("auto", "cpu") == resolve_precision("fp32", "cpu") == "fp32"


def test_no_autocast_and_no_loss_scaling_for_fp16():
    cpu = torch.device("cpu")
    assert not grad_scaler(cpu, "amp").is_enabled()  # CPU never scales
    assert type(autocast(cpu, "amp")).__name__ == "nullcontext"
    cuda = torch.device("cuda")  # constructing the device needs no GPU
    assert type(autocast(cuda, "fp16")).__name__ == "nullcontext"
    assert type(autocast(cuda, "fp32")).__name__ == "nullcontext"


def test_resuming_an_old_autocast_fp16_run_as_todays_fp16_is_refused(tmp_path):
    path = tmp_path / "last.pt"
    s = TrainSettings(epochs=2, lr=0.01, batch_size=8, precision="fp16")
    Trainer(_method("coop"), Blobs(), s, checkpoint=path).fit(until_epoch=1)
    old = load_training_checkpoint(path)
    del old["precision"]  # what a checkpoint written before amp existed looks like
    save_training_checkpoint(path, old)
    resumed = Trainer(cast_for_precision(_method("coop"), "fp16"), Blobs(), s, checkpoint=path)
    with pytest.raises(CheckpointError) as info:
        resumed.fit(resume=True)
    assert info.value.message == (
        f"{path} was written when model.precision=fp16 meant fp16 autocast with fp32 weights (now called amp); "
        "today fp16 is the authors' half-precision mode, so resuming would change the run midway"
    )
    assert info.value.hint.startswith("start it again with --overwrite (set model.precision=amp for what it ran)")
    check_same_precision({"epoch": 1}, "fp32", path)  # old fp32 and bf16 runs resume as before
    check_same_precision({"epoch": 1}, "bf16", path)
    check_same_precision({"precision": "fp16"}, "fp16", path)
    with pytest.raises(CheckpointError, match=r"trained with model.precision=amp, not fp16"):
        check_same_precision({"precision": "amp"}, "fp16", path)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 training runs on CUDA only (CPU refuses it)")
def test_fp16_training_steps_on_cuda():
    resolve_precision("fp16", "cuda")  # allowed there
    before, after, trainer = _warmup_epoch("fp16", "cuda")
    method = trainer.method
    assert not trainer.scaler.is_enabled()
    assert method.clip.visual.conv1.weight.dtype == HALF and method.clip.ln_final.weight.dtype == FULL
    assert method.text.ctx.dtype == HALF and method.vision.proj.weight.dtype == HALF
    assert method.text.deep[0].dtype == FULL and method.vision.deep_proj[0].weight.dtype == FULL
    before32, after32, _ = _warmup_epoch("fp32", "cuda")
    for name in STUCK:  # lost in half, moved in fp32
        assert _kept(before, after, name) > 0.99 and _kept(before32, after32, name) < 0.7, name
    with torch.no_grad():
        logits = method.eval()(_images(8).to("cuda")).logits
    assert logits.dtype == HALF and torch.isfinite(logits).all()


def test_cli_fp16_on_cpu_is_one_error_and_writes_nothing(data_root, tmp_path):
    from typer.testing import CliRunner

    from restore.cli import app

    out = tmp_path / "runs"
    args = ["train", "-m", "maple", "-d", "dtd", "-r", data_root, "--backbone", "random:tiny", "--device", "cpu",
            "--precision", "fp16", "-o", out, "--db", tmp_path / "r.sqlite", "--quiet"]  # fmt: skip
    result = CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "250"})
    assert result.exit_code == 2, result.output
    assert result.output.splitlines() == [
        "error: model.precision=fp16 needs a CUDA device (CLIP and the prompts in half precision); on CPU runs are "
        "fp32",
        "  hint: set model.precision=auto or fp32, or --device cuda",
    ]
    assert not out.exists() and not (tmp_path / "r.sqlite").exists()
