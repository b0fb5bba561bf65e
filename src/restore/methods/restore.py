"""RESTORE (arXiv 2403.06136): feature-shift consistency plus FS-guided surgery, added to any two-tower tuning.

Each variant is its base method's config plus `RestoreOptions`; `attach_restore` adds the shift measure, the
consistency loss and the surgery adapters to the base method's model, so ``restore_m`` with ``fs_weight=0``
and ``surgery="none"`` *is* MaPLe (same parameters, same random draws, same logits).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import torch

from restore.clip.model import CLIP, ShiftRequest
from restore.errors import ConfigError
from restore.methods.base import Output, PromptedCLIP, register
from restore.methods.clip_lora import CLIPLoRAConfig
from restore.methods.feature_shift import (
    FeatureShiftConsistency,
    Measure,
    Normalisation,
    ShiftMeasure,
    mean_gram_norm,
)
from restore.methods.ivlp import IVLPConfig
from restore.methods.maple import MaPLeConfig
from restore.methods.mmrl import MMRLConfig
from restore.methods.promptsrc import PromptSRCConfig
from restore.methods.surgery import RELEASED_COEF, Activation, Mode, SurgeryAdapter, released_update_epoch
from restore.options import option

# The authors' run script: (vis_r, text_r, fs_loss weight) per dataset (run_maple_fsa.sh; docs/fidelity.md).
PRESETS: dict[str, tuple[float, float, float]] = {
    "FGVCAircraft": (0.1, 0.1, 1.0),
    "Caltech101": (0.1, 0.1, 1.0),
    "StanfordCars": (0.1, 0.1, 1.0),
    "OxfordFlowers": (0.1, 0.1, 1.0),
    "Food101": (0.1, 0.1, 1.0),
    "OxfordPets": (0.01, 0.1, 1.0),
    "EuroSAT": (0.01, 0.1, 1.0),
    "SUN397": (0.05, 0.05, 1.0),
    "UCF101": (0.05, 0.05, 1.0),
    "ImageNet": (0.05, 0.05, 1.0),
    "DescribableTextures": (0.15, 0.1, 0.5),
    # The script's xd_train.sh line (ImageNet source, evaluated on every cross-dataset and DG target).
    "cross_dataset": (0.01, 0.1, 1.0),
    # The few-shot script (scripts/maple_fsa/main.sh) passes no ratios: train.py's argparse defaults.
    "fewshot_script": (0.1, 0.1, 1.0),
    # Anything else (a user's dataset, the synthetic world): the most common row of the script.
    "other": (0.1, 0.1, 1.0),
}
# Protocols whose training run is the script's cross-dataset run (ImageNet, all classes, 16 shots).
CROSS_DATASET_PROTOCOLS = ("xd", "dg")

Recipe = Literal["paper", "released"]
# What each recipe decides for the options a run leaves open (null). docs/fidelity.md says where each comes from.
RECIPES: dict[str, dict[str, str]] = {
    # The paper: activation shift (Eq. 6), ReLU adapters (Eq. 11), α guided by the measured shift.
    "paper": {"shift_measure": "activation", "surgery": "guided", "surgery_activation": "relu"},
    # The authors' released code (maple_fsa.py), which produced the published numbers: the Gram-norm proxy over
    # the deep prompts, QuickGELU adapters, α fixed then updated once after epoch ⌊E/3⌋.
    "released": {"shift_measure": "parameter", "surgery": "released", "surgery_activation": "quickgelu"},
}


@dataclass
class RestoreOptions:
    """What RESTORE adds to its base method. ``None`` means: the recipe's choice (measure, surgery,
    activation) or the per-dataset value of the released script (ratios, λ_fs); a run's resolved config.yaml
    holds the values filled in (`for_run`)."""

    recipe: Recipe = option(  # noqa: RUF009  (option() is dataclasses.field)
        "paper", help="paper: Eq. 6 activation shift, ReLU, guided α; released: the authors' code (docs/fidelity.md)"
    )
    fs_weight: float | None = option(None, help="λ_fs; null: per-dataset (1, DTD 0.5)", min=0.0)
    shift_measure: Literal["activation", "parameter"] | None = option(
        None, help="activation: the paper's Eq. 6; parameter: the released code's Gram-norm proxy; null: recipe's"
    )
    normalisation: Literal["rms", "relative"] = option("rms", help="per-token RMS, or relative to ‖Φ(X)‖")
    detach_free: bool = option(False, help="no gradient through the prompt-free branch (cheaper; ablation)")
    token_fraction: float = option(1.0, help="fraction of image tokens in the prompt-free branch", min=1e-6, max=1.0)
    surgery: Literal["guided", "fixed", "released", "none"] | None = option(
        None, help="FS-guided α, fixed α, the released code's one-time update, or no surgery; null: recipe's"
    )
    surgery_activation: Literal["relu", "quickgelu"] | None = option(
        None, help="ReLU (paper) or QuickGELU (code); null: recipe's"
    )
    surgery_hidden_mult: int = option(4, help="adapter hidden width / embedding width (512→2048→512)", min=1)
    surgery_zero_init: bool = option(False, help="start the adapters as the identity (not the released default)")
    vision_ratio: float | None = option(None, help="initial/fixed α_v (vis_r); null: per-dataset", min=0.0)
    text_ratio: float | None = option(None, help="initial/fixed α_t (text_r); null: per-dataset", min=0.0)
    gamma: float | None = option(None, help="γ of α_v = γ Σ s^v; null: calibrated so α_v starts at vis_r")
    beta: float | None = option(None, help="β of α_t = β Σ s^t; null: calibrated so α_t starts at text_r")
    alpha_momentum: float = option(0.9, help="moving-average momentum of the guided α", min=0.0, max=1.0)
    preset: str = option(
        "auto",
        help="row of the released script's per-dataset values: auto (the dataset's; cross_dataset under xd/dg), "
        "cross_dataset, other, or a dataset",
    )

    def preset_row(self, dataset: str | None, protocol: str | None = None) -> str:
        """The row of `PRESETS` this run uses."""
        if self.preset != "auto":
            if self.preset not in PRESETS:
                raise ConfigError(
                    f"unknown RESTORE preset {self.preset!r}", hint=f"one of auto, {', '.join(PRESETS)}"
                )
            return self.preset
        if protocol in CROSS_DATASET_PROTOCOLS:
            return "cross_dataset"
        if protocol == "fewshot" and self.recipe == "released":
            return "fewshot_script"
        named = dataset in PRESETS and dataset not in ("cross_dataset", "fewshot_script", "other")
        return dataset if named else "other"

    def resolved(self, dataset: str | None, protocol: str | None = None) -> tuple[float, float, float]:
        """(vision ratio, text ratio, λ_fs) for this run."""
        vis, txt, fs = PRESETS[self.preset_row(dataset, protocol)]
        return (
            vis if self.vision_ratio is None else self.vision_ratio,
            txt if self.text_ratio is None else self.text_ratio,
            fs if self.fs_weight is None else self.fs_weight,
        )

    def for_run(self, protocol: str | None, dataset: str | None) -> RestoreOptions:
        """A copy with every open value filled for a run of ``protocol`` on ``dataset`` (a CoOp dataset name):
        the recipe's choices and the preset row's ratios, so the run's config says exactly what ran."""
        if self.recipe not in RECIPES:
            raise ConfigError(f"unknown RESTORE recipe {self.recipe!r}", hint=f"one of {', '.join(RECIPES)}")
        recipe = RECIPES[self.recipe]
        vis, txt, fs = self.resolved(dataset, protocol)
        filled = {k: v if getattr(self, k) is None else getattr(self, k) for k, v in recipe.items()}
        row = self.preset_row(dataset, protocol)
        done = dataclasses.replace(
            self, **filled, preset=row, vision_ratio=vis, text_ratio=txt, fs_weight=fs  # type: ignore[arg-type]
        )
        base = getattr(super(RestoreOptions, done), "for_run", None)  # the base method's open values (MMRL's)
        return base(protocol, dataset) if base is not None else done

    def build(self, clip: CLIP, *, dataset: str | None = None, n_classes: int = 0) -> PromptedCLIP:
        """The base method (the next config in the variant's bases) with RESTORE attached."""
        method = super().build(clip, dataset=dataset, n_classes=n_classes)  # type: ignore[misc]
        return attach_restore(method, self, dataset)


def attach_restore(method: PromptedCLIP, options: RestoreOptions, dataset: str | None) -> PromptedCLIP:
    """Add the shift measure, L_fs and the surgery adapters to a built method that changes both towers (deep
    prompts, LoRA, ...): the activation shift compares each tuned block with and without its learnable part.

    The ``parameter`` measure and the ``released`` surgery read the Gram norm of deep prompts; on a method
    without prompts in both towers they have no meaning and are refused."""
    tuned = method.tuned_towers()
    if tuned != {"vision", "text"}:
        raise ConfigError(
            f"RESTORE needs a base method that tunes both towers; {method.name!r} tunes "
            f"{', '.join(sorted(tuned)) or 'neither'}",
            hint="use a multi-modal method (deep prompts in both towers, or LoRA with encoder: both)",
        )
    options = options.for_run(None, dataset)  # a no-op on a config the engine resolved
    vis_ratio, txt_ratio, fs_weight = options.vision_ratio, options.text_ratio, options.fs_weight
    assert vis_ratio is not None and txt_ratio is not None and fs_weight is not None
    surgery: Mode = options.surgery  # type: ignore[assignment]
    measure_kind: Measure = options.shift_measure  # type: ignore[assignment]
    prompts_both = method.prompted_towers() == {"vision", "text"}
    if not prompts_both and (measure_kind == "parameter" or surgery == "released"):
        what = "shift_measure: parameter" if measure_kind == "parameter" else "surgery: released"
        raise ConfigError(
            f"RESTORE's {what} reads the Gram norm of deep prompts, which {method.name!r} does not have",
            hint="use recipe: paper (the activation shift, guided surgery), or shift_measure: activation and "
            "surgery: guided | fixed | none",
        )
    normalisation: Normalisation = options.normalisation
    needs_shift = fs_weight > 0 or surgery == "guided"
    if not needs_shift and surgery == "none":
        return method  # exactly the base method
    if needs_shift:
        measure = ShiftMeasure(method, measure_kind, normalisation)
        method.shift_measure = measure
        if measure_kind == "activation":
            method.shift_request = ShiftRequest(fraction=options.token_fraction, detach=options.detach_free)
    if fs_weight > 0:
        method.losses.append(FeatureShiftConsistency(measure, fs_weight))
    if surgery != "none":
        act: Activation = options.surgery_activation  # type: ignore[assignment]
        dim = method.clip.cfg.embed_dim
        kwargs = dict(hidden_mult=options.surgery_hidden_mult, activation=act, zero_init=options.surgery_zero_init)
        method.image_adapter = SurgeryAdapter(dim, vis_ratio, **kwargs)
        method.text_adapter = SurgeryAdapter(dim, txt_ratio, **kwargs)
        for p in (*method.image_adapter.parameters(), *method.text_adapter.parameters()):
            p.requires_grad_(True)
    if surgery == "guided":

        def guide(m: PromptedCLIP, out: Output) -> None:
            vision, text = measure(out)
            m.image_adapter.guide(sum(vision.values()), vis_ratio, options.alpha_momentum, options.gamma)
            m.text_adapter.guide(sum(text.values()), txt_ratio, options.alpha_momentum, options.beta)

        method.step_hooks.append(guide)
    if surgery == "released":

        def released_update(epoch: int, total_epochs: int) -> None:
            if epoch != released_update_epoch(total_epochs):
                return
            with torch.no_grad():
                text = method.text.layer_prompts()
                vision = method.vision.layer_prompts(text)
            method.image_adapter.set_alpha(vis_ratio + RELEASED_COEF["vision"] * mean_gram_norm(vision))
            method.text_adapter.set_alpha(txt_ratio + RELEASED_COEF["text"] * mean_gram_norm(text))

        method.epoch_hooks.append(released_update)
    if surgery != "none":

        def log_alpha(m: PromptedCLIP, out: Output) -> None:
            out.logs["alpha_v"] = float(m.image_adapter.alpha)
            out.logs["alpha_t"] = float(m.text_adapter.alpha)

        method.step_hooks.append(log_alpha)
    elif needs_shift:
        method.step_hooks.append(lambda m, out: measure(out))  # log the shifts even without surgery
    method.restore_settings = {  # what a run used, for its record
        "recipe": options.recipe,
        "preset": options.preset,
        "vision_ratio": vis_ratio,
        "text_ratio": txt_ratio,
        "fs_weight": fs_weight,
        "shift_measure": measure_kind,
        "normalisation": normalisation,
        "surgery": surgery,
        "surgery_activation": options.surgery_activation if surgery != "none" else None,
    }
    return method


@register("restore_m", "RESTORE on MaPLe: feature-shift consistency + FS-guided surgery adapters")
@dataclass
class RestoreMConfig(RestoreOptions, MaPLeConfig):
    """RESTORE's options on MaPLe's config; `RestoreOptions.build` attaches it to the MaPLe model."""


@register("restore_p", "RESTORE on PromptSRC: feature-shift consistency + FS-guided surgery adapters")
@dataclass
class RestorePConfig(RestoreOptions, PromptSRCConfig):
    """RESTORE on PromptSRC."""


@register("restore_ivlp", "RESTORE on IVLP (independent deep prompts): consistency loss + FS-guided surgery")
@dataclass
class RestoreIVLPConfig(RestoreOptions, IVLPConfig):
    """RESTORE on IVLP."""


@register("restore_lora", "RESTORE on CLIP-LoRA: consistency of the LoRA blocks' shifts + FS-guided surgery")
@dataclass
class RestoreLoRAConfig(RestoreOptions, CLIPLoRAConfig):
    """RESTORE on CLIP-LoRA: the shift of a LoRA block is the block with and without its ΔW."""


@register("restore_mmrl", "RESTORE on MMRL: consistency of the representation blocks' shifts + FS-guided surgery")
@dataclass
class RestoreMMRLConfig(RestoreOptions, MMRLConfig):
    """RESTORE on MMRL: its per-dataset values (alignment λ, representation width) are filled after RESTORE's."""
