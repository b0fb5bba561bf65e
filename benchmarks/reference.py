"""The baseline: MaPLe and RESTORE written the way the CoOp/MaPLe research code is, used only to compare against.

This is deliberately *not* our design. It follows OpenAI's ``clip/model.py`` as modified by the MaPLe release
(``ResidualAttentionBlock_MaPLe``, ``MultiModalPromptLearner``, ``TextEncoder``, ``CustomCLIP``):

- blocks use ``nn.MultiheadAttention`` in the (length, batch, width) layout, the text tower a 77x77 causal mask;
- every class prompt runs all 77 token positions on every step;
- MaPLe's compound prompts: the vision tokens are appended before ``ln_pre`` and, like the text context, are
  replaced by the next layer's tokens inside each prompted block;
- RESTORE's feature shift (paper Eq. 6) the straightforward way: each prompted block is run a second time on
  the same input with its prompt tokens removed, and Ω is the difference of the two outputs.

Parameter names of the backbone are OpenAI's, as in ours, so ``ReferenceCLIP`` loads our CLIP's state dict
and both compute the same function; ``load_from`` also copies a built method's learnable tensors, so a
reference model and one of ours can be compared step by step (tests/perf).
"""

from __future__ import annotations

import copy
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from restore.clip.architectures import CLIPConfig
from restore.clip.tokenizer import tokenize


class LayerNorm(nn.LayerNorm):
    """OpenAI's: computed in fp32 whatever the input type."""

    def forward(self, x: Tensor) -> Tensor:
        orig_type = x.dtype
        ret = super().forward(x.type(torch.float32))
        return ret.type(orig_type)


class QuickGELU(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(1.702 * x)


class ShiftRecorder:
    """Collects, per prompted layer, the per-sample mean over counted tokens of ‖Ω‖² and of ‖Φ(X)‖²."""

    def __init__(self, eot: Tensor | None = None) -> None:
        self.eot = eot  # text: index of each prompt's end-of-text token; counted tokens are those up to it
        self.shift_ms: list[Tensor] = []
        self.ref_ms: list[Tensor] = []


class ResidualAttentionBlock_MaPLe(nn.Module):  # the release's name
    def __init__(
        self,
        d_model: int,
        n_head: int,
        attn_mask: Tensor | None,
        text_layer: bool,
        i: int,
        n_ctx: int,
        quick_gelu: bool = True,
    ) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(d_model, n_head)
        self.ln_1 = LayerNorm(d_model)
        act = QuickGELU() if quick_gelu else nn.GELU()
        self.mlp = nn.Sequential(
            OrderedDict(
                [("c_fc", nn.Linear(d_model, d_model * 4)), ("gelu", act), ("c_proj", nn.Linear(d_model * 4, d_model))]
            )
        )
        self.ln_2 = LayerNorm(d_model)
        self.text_layer = text_layer
        self.attn_mask = attn_mask
        self.compound_prompt_nctx = n_ctx
        self.first_layer = i == 0

    def attention(self, x: Tensor, attn_mask: Tensor | None) -> Tensor:
        attn_mask = attn_mask.to(dtype=x.dtype, device=x.device) if attn_mask is not None else None
        return self.attn(x, x, x, need_weights=False, attn_mask=attn_mask)[0]

    def block(self, x: Tensor, attn_mask: Tensor | None) -> Tensor:
        x = x + self.attention(self.ln_1(x), attn_mask)
        x = x + self.mlp(self.ln_2(x))
        return x

    def forward(self, inputs: list) -> list:
        x, compound_prompts_deeper, counter, shift = inputs
        prompted = self.first_layer  # MaPLe's first layer carries the context / appended vision tokens
        if not self.first_layer and len(compound_prompts_deeper) > 0 and counter <= len(compound_prompts_deeper) - 1:
            n = self.compound_prompt_nctx
            if not self.text_layer:
                prefix = x[0 : x.shape[0] - n, :, :]
                visual_context = compound_prompts_deeper[counter].expand(x.shape[1], -1, -1).permute(1, 0, 2)
                x = torch.cat([prefix, visual_context.to(x.dtype)], dim=0)
            else:
                prefix = x[:1, :, :]
                suffix = x[1 + n :, :, :]
                textual_context = compound_prompts_deeper[counter].expand(x.shape[1], -1, -1).permute(1, 0, 2)
                x = torch.cat([prefix, textual_context.to(x.dtype), suffix], dim=0)
            counter += 1
            prompted = True
        out = self.block(x, self.attn_mask)
        if shift is not None and prompted:
            self.record_shift(x, out, shift)
        return [out, compound_prompts_deeper, counter, shift]

    def record_shift(self, x: Tensor, out: Tensor, shift: ShiftRecorder) -> None:
        """Ω: run this block again on the same input without its prompt tokens."""
        n = self.compound_prompt_nctx
        if not self.text_layer:  # vision prompts are the last n tokens
            free = self.block(x[: x.shape[0] - n], None)
            omega = out[: x.shape[0] - n] - free
            shift.shift_ms.append(omega.pow(2).sum(-1).mean(0))
            shift.ref_ms.append(free.pow(2).sum(-1).mean(0))
            return
        keep = torch.cat([torch.arange(1), torch.arange(1 + n, x.shape[0])]).to(x.device)
        length = keep.numel()
        mask = torch.empty(length, length, device=x.device).fill_(float("-inf")).triu_(1)
        free = self.block(x[keep], mask)
        omega = out[keep] - free
        counted = (keep[:, None] <= shift.eot[None, :].to(x.device)).to(x.dtype)  # (L', N)
        denom = counted.sum(0)
        shift.shift_ms.append((omega.pow(2).sum(-1) * counted).sum(0) / denom)
        shift.ref_ms.append((free.pow(2).sum(-1) * counted).sum(0) / denom)


class Transformer(nn.Module):
    def __init__(
        self,
        width: int,
        layers: int,
        heads: int,
        attn_mask: Tensor | None,
        text_layer: bool,
        n_ctx: int,
        quick_gelu: bool = True,
    ) -> None:
        super().__init__()
        self.width = width
        self.layers = layers
        self.resblocks = nn.Sequential(
            *[
                ResidualAttentionBlock_MaPLe(width, heads, attn_mask, text_layer, i, n_ctx, quick_gelu)
                for i in range(layers)
            ]
        )

    def forward(self, x: list) -> list:
        return self.resblocks(x)


class VisionTransformer_MaPLe(nn.Module):
    def __init__(
        self,
        input_resolution: int,
        patch_size: int,
        width: int,
        layers: int,
        heads: int,
        output_dim: int,
        n_ctx: int,
        quick_gelu: bool = True,
    ) -> None:
        super().__init__()
        self.input_resolution = input_resolution
        self.output_dim = output_dim
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size, bias=False)
        scale = width**-0.5
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn((input_resolution // patch_size) ** 2 + 1, width))
        self.ln_pre = LayerNorm(width)
        self.transformer = Transformer(width, layers, heads, None, False, n_ctx, quick_gelu)
        self.ln_post = LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, output_dim))

    def forward(
        self, x: Tensor, shared_ctx: Tensor | None, compound_deeper_prompts: list, shift: ShiftRecorder | None = None
    ) -> Tensor:
        x = self.conv1(x)
        x = x.reshape(x.shape[0], x.shape[1], -1)
        x = x.permute(0, 2, 1)
        zeros = torch.zeros(x.shape[0], 1, x.shape[-1], dtype=x.dtype, device=x.device)
        x = torch.cat([self.class_embedding.to(x.dtype) + zeros, x], dim=1)
        x = x + self.positional_embedding.to(x.dtype)
        if shared_ctx is not None:  # after the positional embeddings, attach the prompts
            visual_ctx = shared_ctx.expand(x.shape[0], -1, -1).to(x.dtype)
            x = torch.cat([x, visual_ctx], dim=1)
        x = self.ln_pre(x)
        x = x.permute(1, 0, 2)
        outputs = self.transformer([x, compound_deeper_prompts, 0, shift])
        x = outputs[0].permute(1, 0, 2)
        x = self.ln_post(x[:, 0, :])
        return x @ self.proj


class ReferenceCLIP(nn.Module):
    """OpenAI's CLIP with MaPLe's blocks; loads the state dict of our CLIP of the same config."""

    def __init__(self, cfg: CLIPConfig, n_ctx: int = 2) -> None:
        super().__init__()
        if cfg.text.embedding_rows is not None:
            raise ValueError("the reference supports the full BPE token embedding only")
        v, t = cfg.vision, cfg.text
        self.cfg = cfg
        self.context_length = t.context_length
        self.visual = VisionTransformer_MaPLe(
            v.image_size, v.patch_size, v.width, v.layers, v.heads, cfg.embed_dim, n_ctx, cfg.quick_gelu
        )
        self.transformer = Transformer(
            t.width, t.layers, t.heads, self.build_attention_mask(), True, n_ctx, cfg.quick_gelu
        )
        self.vocab_size = t.vocab_size
        self.token_embedding = nn.Embedding(t.vocab_size, t.width)
        self.positional_embedding = nn.Parameter(torch.empty(self.context_length, t.width))
        self.ln_final = LayerNorm(t.width)
        self.text_projection = nn.Parameter(torch.empty(t.width, cfg.embed_dim))
        self.logit_scale = nn.Parameter(torch.ones([]))

    def build_attention_mask(self) -> Tensor:
        # lazily create causal attention mask, with full attention between the vision tokens
        mask = torch.empty(self.context_length, self.context_length)
        mask.fill_(float("-inf"))
        mask.triu_(1)  # zero out the lower diagonal
        return mask

    @property
    def dtype(self) -> torch.dtype:
        return self.visual.conv1.weight.dtype


class TextEncoder(nn.Module):
    def __init__(self, clip_model: ReferenceCLIP) -> None:
        super().__init__()
        self.transformer = clip_model.transformer
        self.positional_embedding = clip_model.positional_embedding
        self.ln_final = clip_model.ln_final
        self.text_projection = clip_model.text_projection
        self.dtype = clip_model.dtype

    def forward(
        self,
        prompts: Tensor,
        tokenized_prompts: Tensor,
        compound_prompts_deeper_text: list,
        shift: ShiftRecorder | None = None,
    ) -> Tensor:
        x = prompts + self.positional_embedding.type(self.dtype)
        x = x.permute(1, 0, 2)  # NLD -> LND
        combined = [x, compound_prompts_deeper_text, 0, shift]
        outputs = self.transformer(combined)
        x = outputs[0]
        x = x.permute(1, 0, 2)  # LND -> NLD
        x = self.ln_final(x).type(self.dtype)
        # take features from the eot embedding (eot_token is the highest number in each sequence)
        x = x[torch.arange(x.shape[0]), tokenized_prompts.argmax(dim=-1)] @ self.text_projection
        return x


def _get_clones(module: nn.Module, n: int) -> nn.ModuleList:
    return nn.ModuleList([copy.deepcopy(module) for _ in range(n)])


class MultiModalPromptLearner(nn.Module):
    def __init__(
        self,
        classnames: list[str],
        clip_model: ReferenceCLIP,
        n_ctx: int = 2,
        ctx_init: str = "a photo of a",
        depth: int = 9,
    ) -> None:
        super().__init__()
        n_cls = len(classnames)
        dtype = clip_model.dtype
        ctx_dim = clip_model.ln_final.weight.shape[0]
        vis_dim = clip_model.visual.conv1.weight.shape[0]
        self.compound_prompts_depth = depth
        ctx_init = ctx_init.replace("_", " ")
        prompt = tokenize(ctx_init, clip_model.context_length)
        with torch.no_grad():
            embedding = clip_model.token_embedding(prompt).type(dtype)
        ctx_vectors = embedding[0, 1 : 1 + n_ctx, :]
        prompt_prefix = ctx_init
        self.proj = nn.Linear(ctx_dim, vis_dim)
        self.ctx = nn.Parameter(ctx_vectors.clone())
        self.compound_prompts_text = nn.ParameterList(
            [nn.Parameter(torch.empty(n_ctx, ctx_dim)) for _ in range(self.compound_prompts_depth - 1)]
        )
        for single_para in self.compound_prompts_text:
            nn.init.normal_(single_para, std=0.02)
        single_layer = nn.Linear(ctx_dim, vis_dim)
        self.compound_prompt_projections = _get_clones(single_layer, self.compound_prompts_depth - 1)

        classnames = [name.replace("_", " ").strip() for name in classnames]
        prompts = [prompt_prefix + " " + name + "." for name in classnames]
        tokenized_prompts = tokenize(prompts, clip_model.context_length)
        with torch.no_grad():
            embedding = clip_model.token_embedding(tokenized_prompts).type(dtype)
        self.register_buffer("token_prefix", embedding[:, :1, :])  # SOS
        self.register_buffer("token_suffix", embedding[:, 1 + n_ctx :, :])  # CLS, EOS
        self.n_cls = n_cls
        self.n_ctx = n_ctx
        self.tokenized_prompts = tokenized_prompts

    def construct_prompts(self, ctx: Tensor, prefix: Tensor, suffix: Tensor) -> Tensor:
        return torch.cat([prefix, ctx, suffix], dim=1)

    def forward(self) -> tuple[Tensor, Tensor, list, list]:
        ctx = self.ctx
        if ctx.dim() == 2:
            ctx = ctx.unsqueeze(0).expand(self.n_cls, -1, -1)
        prompts = self.construct_prompts(ctx, self.token_prefix, self.token_suffix)
        visual_deep_prompts = [
            layer(self.compound_prompts_text[index]) for index, layer in enumerate(self.compound_prompt_projections)
        ]
        return prompts, self.proj(self.ctx), list(self.compound_prompts_text), visual_deep_prompts


class CustomCLIP(nn.Module):
    """MaPLe's trainer model: cross-entropy in training, logits in evaluation."""

    def __init__(
        self,
        classnames: list[str],
        clip_model: ReferenceCLIP,
        n_ctx: int = 2,
        ctx_init: str = "a photo of a",
        depth: int = 9,
    ) -> None:
        super().__init__()
        depth = min(depth, clip_model.visual.transformer.layers, clip_model.transformer.layers)
        self.prompt_learner = MultiModalPromptLearner(classnames, clip_model, n_ctx, ctx_init, depth)
        self.tokenized_prompts = self.prompt_learner.tokenized_prompts
        self.image_encoder = clip_model.visual
        self.text_encoder = TextEncoder(clip_model)
        self.logit_scale = clip_model.logit_scale
        self.dtype = clip_model.dtype
        self.clip_model = clip_model
        for name, param in self.named_parameters():
            param.requires_grad_("prompt_learner" in name)

    def features(
        self, image: Tensor, shift: bool = False
    ) -> tuple[Tensor, Tensor, ShiftRecorder | None, ShiftRecorder | None]:
        tokenized_prompts = self.tokenized_prompts
        prompts, shared_ctx, deep_compound_prompts_text, deep_compound_prompts_vision = self.prompt_learner()
        t_shift = ShiftRecorder(tokenized_prompts.argmax(-1)) if shift else None
        v_shift = ShiftRecorder() if shift else None
        text_features = self.text_encoder(prompts, tokenized_prompts, deep_compound_prompts_text, t_shift)
        image_features = self.image_encoder(image.type(self.dtype), shared_ctx, deep_compound_prompts_vision, v_shift)
        return image_features, text_features, v_shift, t_shift

    def forward(self, image: Tensor, label: Tensor | None = None) -> Tensor:
        logit_scale = self.logit_scale.exp()
        image_features, text_features, _, _ = self.features(image)
        image_features = image_features / image_features.norm(dim=-1, keepdim=True)
        text_features = text_features / text_features.norm(dim=-1, keepdim=True)
        logits = logit_scale * image_features @ text_features.t()
        if self.prompt_learner.training and label is not None:
            return F.cross_entropy(logits, label)
        return logits

    # --- to compare with ours -----------------------------------------------------------------------------
    def load_from(self, method: nn.Module) -> None:
        """Copy a built method's backbone and learnable tensors (names mapped by `reference_name`)."""
        self.clip_model.load_state_dict(method.clip.state_dict())
        ours = method.learnable_state_dict()
        mine = self.state_dict()
        state = {}
        for name, value in ours.items():
            ref = reference_name(name)
            if ref is not None:
                if tuple(mine[ref].shape) != tuple(value.shape):
                    raise ValueError(f"{name} -> {ref}: {tuple(value.shape)} vs {tuple(mine[ref].shape)}")
                state[ref] = value
        missing = {k for k in mine if not k.startswith("clip_model.") and k not in state}
        aliases = ("prompt_learner.token_", "image_encoder.", "text_encoder.", "logit_scale")
        missing -= {k for k in missing if k.startswith(aliases)}
        if missing:
            raise ValueError(f"reference tensors without a counterpart in the method: {sorted(missing)}")
        self.load_state_dict({**mine, **state})


class SurgeryAdapter(nn.Module):
    """RESTORE's adapter on a final feature: x + α · W_down · act(W_up · LN(x))."""

    def __init__(self, dim: int, ratio: float, hidden_mult: int = 4, quick_gelu: bool = False) -> None:
        super().__init__()
        self.ln = nn.LayerNorm(dim)
        self.up = nn.Linear(dim, hidden_mult * dim)
        self.act = QuickGELU() if quick_gelu else nn.ReLU()
        self.down = nn.Linear(hidden_mult * dim, dim)
        self.register_buffer("alpha", torch.tensor(float(ratio)))
        self.register_buffer("scale", torch.tensor(float("nan")))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.alpha * self.down(self.act(self.up(self.ln(x))))


class RestoreCustomCLIP(CustomCLIP):
    """RESTORE on MaPLe the straightforward way: every prompted block runs twice (with and without prompts)."""

    def __init__(
        self,
        classnames: list[str],
        clip_model: ReferenceCLIP,
        *,
        vis_ratio: float = 0.1,
        text_ratio: float = 0.1,
        fs_weight: float = 1.0,
        momentum: float = 0.9,
        **kwargs,
    ) -> None:
        super().__init__(classnames, clip_model, **kwargs)
        dim = clip_model.text_projection.shape[1]
        self.image_surgery = SurgeryAdapter(dim, vis_ratio)
        self.text_surgery = SurgeryAdapter(dim, text_ratio)
        self.ratios = (vis_ratio, text_ratio)
        self.fs_weight = fs_weight
        self.momentum = momentum
        for p in (*self.image_surgery.parameters(), *self.text_surgery.parameters()):
            p.requires_grad_(True)

    def forward(self, image: Tensor, label: Tensor | None = None):
        training = self.prompt_learner.training and label is not None
        image_features, text_features, v_shift, t_shift = self.features(image, shift=training)
        image_features = self.image_surgery(image_features)
        text_features = self.text_surgery(text_features)
        image_features = image_features / image_features.norm(dim=-1, keepdim=True)
        text_features = text_features / text_features.norm(dim=-1, keepdim=True)
        logits = self.logit_scale.exp() * image_features @ text_features.t()
        if not training:
            return logits
        s_v = [ms.sqrt().mean() for ms in v_shift.shift_ms]
        s_t = [ms.sqrt().mean() for ms in t_shift.shift_ms]
        ce = F.cross_entropy(logits, label)
        fs = self.fs_weight * sum((a - b) ** 2 for a, b in zip(s_v, s_t, strict=True))
        with torch.no_grad():  # FS-guided ratios: a moving average of scale * total shift
            pairs = ((self.image_surgery, s_v, self.ratios[0]), (self.text_surgery, s_t, self.ratios[1]))
            for adapter, s, ratio in pairs:
                total = float(sum(x.detach() for x in s))
                if torch.isnan(adapter.scale):
                    adapter.scale.fill_(ratio / total if total > 0 else 0.0)
                adapter.alpha = (self.momentum * adapter.alpha + (1 - self.momentum) * adapter.scale * total).detach()
        return ce + fs, {"ce": ce, "fs": fs, "s_v": s_v, "s_t": s_t}


# Our learnable tensor names -> the release's names.
_PREFIXES = (
    ("text.ctx", "prompt_learner.ctx"),
    ("text.deep.", "prompt_learner.compound_prompts_text."),
    ("vision.proj.", "prompt_learner.proj."),
    ("vision.deep_proj.", "prompt_learner.compound_prompt_projections."),
    ("image_adapter.", "image_surgery."),
    ("text_adapter.", "text_surgery."),
)


def reference_name(ours: str) -> str | None:
    """The reference model's name of one of our method's learnable tensors (None: no counterpart)."""
    for mine, theirs in _PREFIXES:
        if ours.startswith(mine):
            return theirs + ours[len(mine) :]
    return None


def reference_for(method: nn.Module, classnames: list[str], **kwargs) -> CustomCLIP:
    """A reference model computing the same function as our built ``method`` (maple or restore_m)."""
    clip = ReferenceCLIP(method.clip.cfg, n_ctx=method.config.n_ctx)
    clip.load_state_dict(method.clip.state_dict())  # before the prompt learner embeds its sentences, as MaPLe
    common = dict(n_ctx=method.config.n_ctx, ctx_init=method.config.ctx_init, depth=method.config.depth)
    if getattr(method, "image_adapter", None) is not None:
        settings = method.restore_settings
        ref: CustomCLIP = RestoreCustomCLIP(
            classnames,
            clip,
            vis_ratio=settings["vision_ratio"],
            text_ratio=settings["text_ratio"],
            fs_weight=settings["fs_weight"],
            momentum=method.config.alpha_momentum,
            **common,
            **kwargs,
        )
    else:
        ref = CustomCLIP(classnames, clip, **common, **kwargs)
    ref.load_from(method)
    return ref
