"""Named schedule sets: the one table that says what lr, epochs, batch size and method settings a method
runs under a set for a protocol, and which official file each value comes from.

Two sets:

* ``own`` — each method as its own release trains it (MaPLe 5 epochs, PromptSRC 20, CoOp 200, ...).
* ``restore_paper`` — the baselines as the RESTORE paper re-ran them with the configs of its release
  (Yaphabates/RESTORE_): every method about 10 epochs on base-to-novel, so a RESTORE row and its baseline's
  row differ in the method only.

Why a table and not per-method defaults: comparing ``restore_m`` (10 epochs) with ``maple`` under MaPLe's
own 5 epochs compares a method *and* an epoch count; a set makes the whole comparison explicit, and the
run's ``config.yaml`` records both the set's name and every value it filled.

Protocols: ``dg`` uses the ``xd`` entry (every release tests its ImageNet model on the variants);
``train`` and ``fewshot`` use a method's ``fewshot`` entry when its release has one, else ``b2n``'s.
The RESTORE variants have no release apart from the paper's, so both sets give them the same schedule.
docs/fidelity.md explains each value and every deviation.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from restore.data import get_dataset
from restore.data.protocols import base_class_count
from restore.data.registry import normalise
from restore.errors import ConfigError

SCHEDULE_SETS = ("own", "restore_paper")
DEFAULT_SET = "own"
SET_HELP = {
    "own": "each method's own release (MaPLe 5 epochs, PromptSRC 20, CoOp 200/ImageNet 50, KgCoOp 100, ...)",
    "restore_paper": "the RESTORE paper's re-runs of every baseline (Yaphabates/RESTORE_ configs: 10 epochs b2n)",
}

RESTORE = "Yaphabates/RESTORE_"
MPL = "muzairkhattak/multimodal-prompt-learning"
SRC = "muzairkhattak/PromptSRC"
COOP = "KaiyangZhou/CoOp"
KGCOOP = "htyao89/KgCoOp"


@dataclass(frozen=True)
class Schedule:
    """The settings one (method, set, protocol) entry fills, and where they come from."""

    lr: float
    epochs: int
    batch_size: int
    options: Mapping[str, Any] = field(default_factory=dict)  # method.<key> settings the entry fixes
    source: str = ""  # repository: file(s) the values are read from
    note: str = ""  # a deviation or a quirk of the source, in one sentence
    # CoOp's few-shot recipe: epochs by shots (up to that many shots -> epochs), ImageNet's own count.
    epochs_by_shots: tuple[tuple[int, int], ...] = ()
    imagenet_epochs: int | None = None
    # Epochs of named datasets (registry names) where a release's own runs differ, e.g. TCP's SUN397 and ImageNet.
    dataset_epochs: tuple[tuple[str, int], ...] = ()
    # optim.<key> settings beyond lr/epochs (a release trained with AdamW: optimizer, weight_decay, warm-up).
    optim: Mapping[str, Any] = field(default_factory=dict)

    def epochs_for(self, dataset: str, shots: int) -> int:
        if self.imagenet_epochs is not None and _is_imagenet(dataset):
            return self.imagenet_epochs
        if self.dataset_epochs and dataset:
            named = dict(self.dataset_epochs).get(_registry_name(dataset))
            if named is not None:
                return named
        if shots > 0:
            for most, epochs in self.epochs_by_shots:
                if shots <= most:
                    return epochs
        return self.epochs

    def settings(self, dataset: str = "", shots: int = 16) -> dict[str, Any]:
        """Dotted run-config keys -> values, for `restore.engine.run_config` to fill under the user's values."""
        return {
            "optim.lr": self.lr,
            "optim.epochs": self.epochs_for(dataset, shots),
            "data.batch_size": self.batch_size,
            **{f"optim.{k}": v for k, v in self.optim.items()},
            **{f"method.{k}": v for k, v in self.options.items()},
        }


def _registry_name(dataset: str) -> str:
    try:
        return get_dataset(dataset).name
    except ConfigError:
        return normalise(dataset)


def _is_imagenet(dataset: str) -> bool:
    if not dataset:
        return False

    try:
        return get_dataset(dataset).name == "imagenet"
    except ConfigError:
        return normalise(dataset) == "imagenet"


# --- the entries ---------------------------------------------------------------------------------------
_MAPLE = {"n_ctx": 2, "depth": 9, "ctx_init": "a photo of a"}
_IVLP_2x12 = {"n_ctx_text": 2, "n_ctx_vision": 2, "depth_text": 12, "depth_vision": 12, "ctx_init": "a photo of a"}
_IVLP_4x9 = {"n_ctx_text": 4, "n_ctx_vision": 4, "depth_text": 9, "depth_vision": 9, "ctx_init": "a photo of a"}
_SRC_B2N = {**_IVLP_4x9, "gpa_mean": None, "gpa_std": 1.0}
_COOP = {"n_ctx": 16, "ctx_init": None, "class_specific": False}
_COCOOP = {"n_ctx": 4, "ctx_init": "a photo of a"}
_KGCOOP_OWN = {"n_ctx": 4, "ctx_init": "a photo of a", "weight": 8.0}
_KGCOOP_R = {"n_ctx": 4, "ctx_init": "a photo of a", "weight": 1.0}
_COCOOP_NCTX = (
    "the config's N_CTX 2 has no effect: with CTX_INIT the trainer counts the init's words (trainers/cocoop.py), "
    "so it learns 4 tokens"
)
_SRC_XD = Schedule(
    0.0025, 20, 4, {**_IVLP_4x9, "depth_text": 3, "depth_vision": 3, "gpa_mean": 6.0, "gpa_std": 10.0},
    f"{SRC}: configs/trainers/PromptSRC/vit_b16_c2_ep20_batch4_4+4ctx_cross_datasets.yaml (docs/TRAIN.md)",
    "scripts/promptsrc/xd_train.sh names an ep5 file the release does not have; docs/TRAIN.md names this one",
)  # fmt: skip
_SRC_FEWSHOT = Schedule(
    0.0025, 50, 4, {**_IVLP_4x9, "gpa_mean": 30.0, "gpa_std": 30.0},
    f"{SRC}: scripts/promptsrc/few_shot.sh + configs/trainers/PromptSRC/vit_b16_c2_ep50_batch4_4+4ctx_few_shot.yaml",
)  # fmt: skip
_RESTORE_PAPER_10 = (
    "RESTORE paper (arXiv 2403.06136) Table 1: 10 epochs; the rest PromptSRC's "
    f"({SRC}: configs/trainers/PromptSRC/vit_b16_c2_ep20_batch4_4+4ctx.yaml) — {RESTORE} has no PromptSRC config"
)
_R_MAPLE_B2N = Schedule(
    0.0035, 10, 4, _MAPLE,
    f"{RESTORE}: scripts/maple/base2new_train.sh + configs/trainers/MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml",
    "the file is named ep5 but holds MAX_EPOCH 10",
)  # fmt: skip
_R_MAPLE_XD = Schedule(
    0.0035, 2, 4, _MAPLE,
    f"{RESTORE}: scripts/maple/xd_train.sh + configs/trainers/MaPLe/vit_b16_c2_ep5_batch4_2ctx_cross_datasets.yaml",
)  # fmt: skip
_R_FSA_B2N = Schedule(
    0.0035, 10, 4, _MAPLE,
    f"{RESTORE}: scripts/maple_fsa/base2new_train.sh + configs/trainers/MaPLe_FSA/vit_b16_c2_ep5_batch4_2ctx.yaml",
    "the file is named ep5 but holds MAX_EPOCH 10",
)  # fmt: skip
_R_FSA_XD = Schedule(
    0.0035, 2, 4, _MAPLE,
    f"{RESTORE}: scripts/maple_fsa/xd_train.sh + "
    "configs/trainers/MaPLe_FSA/vit_b16_c2_ep5_batch4_2ctx_cross_datasets.yaml",
)  # fmt: skip
_R_IVLP_B2N = Schedule(
    0.0035, 10, 4, _IVLP_2x12,
    f"{RESTORE}: scripts/independent-vlp/base2new_train.sh + configs/trainers/IVLP/vit_b16_c2_ep10_batch4_2+2ctx.yaml",
)  # fmt: skip
_R_IVLP_XD = Schedule(
    0.0035, 5, 4, _IVLP_2x12,
    f"{RESTORE}: scripts/independent-vlp/xd_train_ivlp.sh + configs/trainers/IVLP/vit_b16_c2_ep5_batch4_2+2ctx.yaml",
)  # fmt: skip
_R_SRC_B2N = Schedule(0.0025, 10, 4, _SRC_B2N, _RESTORE_PAPER_10)
_R_SRC_XD = Schedule(
    _SRC_XD.lr, _SRC_XD.epochs, _SRC_XD.batch_size, _SRC_XD.options, _SRC_XD.source,
    "the RESTORE paper gives no cross-dataset schedule for PromptSRC: PromptSRC's own",
)  # fmt: skip

_ZEROSHOT = Schedule(0.002, 0, 32, {}, "no training (CoOp trainers/zsclip.py)")
# CoOp's few-shot recipe (COOP.md): 1 shot 50 epochs, 2-4 shots 100, 8-16 shots 200; ImageNet 50 at any shots.
_COOP_OWN = Schedule(
    0.002,
    200,
    32,
    _COOP,
    f"{COOP}: COOP.md + scripts/coop/main.sh (NCTX 16, CSC False, end) + configs/trainers/CoOp/vit_b16.yaml "
    "(200 ep), vit_b16_ep100.yaml, vit_b16_ep50.yaml",
    epochs_by_shots=((1, 50), (4, 100)),
    imagenet_epochs=50,
)
_R_COOP_B2N = Schedule(
    0.002, 10, 4, _COOP, f"{RESTORE}: scripts/coop/base2new_train.sh + configs/trainers/CoOp/vit_b16_ep10.yaml"
)
_R_COOP_XD = Schedule(
    0.002, 2, 4, _COOP, f"{RESTORE}: scripts/coop/xd_train.sh + configs/trainers/CoOp/vit_b16_ep10_crossdataset.yaml"
)
_COCOOP_OWN = Schedule(
    0.002,
    10,
    1,
    _COCOOP,
    f"{COOP}: scripts/cocoop/base2new_train.sh, xd_train.sh + "
    "configs/trainers/CoCoOp/vit_b16_c4_ep10_batch1_ctxv1.yaml",
)
_R_COCOOP_B2N = Schedule(
    0.002,
    10,
    2,
    _COCOOP,
    f"{RESTORE}: scripts/cocoop/base2new_train.sh + configs/trainers/CoCoOp/vit_b16_c4_ep10_batch4_nctx2.yaml",
    _COCOOP_NCTX,
)
_R_COCOOP_XD = Schedule(
    0.002,
    2,
    1,
    _COCOOP,
    f"{RESTORE}: scripts/cocoop/xd_train.sh + configs/trainers/CoCoOp/vit_b16_c4_ep10_batch4_nctx2_crossdataset.yaml",
    _COCOOP_NCTX,
)
_KGCOOP_OWN_ALL = Schedule(
    0.002,
    100,
    128,
    _KGCOOP_OWN,
    f"{KGCOOP}: KgCoOp/scripts/base2new_train.sh (NCTX 4; WEIGHT 8.0 from scripts/run.sh) + "
    "KgCoOp/configs/trainers/KgCoOp/vit_b16_ep100_ctxv1.yaml",
)
_R_KGCOOP_B2N = Schedule(
    0.002,
    10,
    4,
    _KGCOOP_R,
    f"{RESTORE}: scripts/kgcoop/base2new_train.sh (NCTX 4, WEIGHT 1.0) + "
    "configs/trainers/KgCoOp/vit_b16_ep10_ctxv1.yaml",
)
_R_KGCOOP_XD = Schedule(
    0.002,
    2,
    4,
    _KGCOOP_R,
    f"{RESTORE}: scripts/kgcoop/xd_train.sh (WEIGHT 1.0) + configs/trainers/KgCoOp/vit_b16_ep2_ctxv1_crossdataset.yaml",
    "the init's 4 words set n_ctx (the script passes no NCTX)",
)
_MAPLE_B2N = Schedule(
    0.0035,
    5,
    4,
    _MAPLE,
    f"{MPL}: scripts/maple/base2new_train_maple.sh + configs/trainers/MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml",
)
_MAPLE_XD = Schedule(
    0.0026,
    2,
    4,
    {**_MAPLE, "depth": 3},
    f"{MPL}: scripts/maple/xd_train_maple.sh + configs/trainers/MaPLe/vit_b16_c2_ep5_batch4_2ctx_cross_datasets.yaml",
)
_IVLP_OWN = Schedule(
    0.0025,
    20,
    4,
    _IVLP_4x9,
    f"{SRC}: scripts/independent-vlp/base2new_train_ivlp.sh + configs/trainers/IVLP/vit_b16_c2_ep20_batch4_4+4ctx.yaml",
    f"PromptSRC's IVLP (4+4 tokens, depth 9); {MPL} trains 2+2 tokens at depth 12 for 5 epochs, lr 0.0035",
)
_VPT_OWN = Schedule(
    0.0025,
    5,
    4,
    {"n_ctx": 8, "depth": 12},
    f"{MPL}: scripts/vpt/base2new_train_vpt.sh, xd_train_vpt.sh + configs/trainers/VPT/vit_b16_c2_ep5_batch4_4.yaml",
)
_R_VPT_B2N = Schedule(
    0.0025,
    10,
    4,
    {"n_ctx": 2, "depth": 12},
    f"{RESTORE}: scripts/vpt/base2new_train.sh + configs/trainers/VPT/vit_b16_ctx2_ep10_batch4_4.yaml",
)
_R_VPT_XD = Schedule(
    0.0025,
    5,
    4,
    {"n_ctx": 8, "depth": 12},
    f"{MPL}: configs/trainers/VPT/vit_b16_c2_ep5_batch4_4.yaml",
    f"{RESTORE}'s scripts/vpt/xd_train_vpt.sh names this file, which only MaPLe's release has",
)
_TEXT_OWN = Schedule(
    0.0025,
    5,
    4,
    {"n_ctx": 4, "depth": 12, "ctx_init": "a photo of a"},
    f"{MPL}: scripts/language-prompting/base2new_train_lp.sh, xd_train_lp.sh + "
    "configs/trainers/IVLP/vit_b16_c2_ep5_batch4_4ctx_language_only.yaml",
)
_R_TEXT_B2N = Schedule(
    0.0025,
    10,
    4,
    {"n_ctx": 2, "depth": 12, "ctx_init": "a photo of a"},
    f"{RESTORE}: scripts/language-prompting/base2new_train.sh + "
    "configs/trainers/IVLP/vit_b16_c2_ep10_batch4_2ctx_language_only.yaml",
)
_R_TEXT_XD = Schedule(
    0.0025,
    5,
    4,
    {"n_ctx": 4, "depth": 12, "ctx_init": "a photo of a"},
    f"{RESTORE}: scripts/language-prompting/xd_train_lp.sh + "
    "configs/trainers/IVLP/vit_b16_c2_ep5_batch4_4ctx_language_only.yaml",
)
_SRC_B2N_OWN = Schedule(
    0.0025,
    20,
    4,
    _SRC_B2N,
    f"{SRC}: scripts/promptsrc/base2new_train.sh + configs/trainers/PromptSRC/vit_b16_c2_ep20_batch4_4+4ctx.yaml",
    "GPA_MEAN 15 is 3/4 of the 20 epochs: gpa_mean null keeps that rule when epochs change",
)

# --- DePT and MMRL (helper i16dept) ---------------------------------------------------------------------
DEPT = "Koorye/DePT"
MMRL = "yunncheng/MMRL"
_DEPT_CFG = (
    f"{DEPT}: configs.py (coop_dept, maple_dept: b2n and xd alike) + train.py extend_cfg (LR_EXP 6.5, WEIGHT 0.7) "
    "+ configs/trainers/ExtrasLinearProbe{}/vit_b16{}.yaml"
)
_DEPT_COOP = Schedule(0.0035, 10, 4, _COOP, _DEPT_CFG.format("CoOp", "_ep10_bs4_lr35"))
_DEPT_MAPLE = Schedule(0.0035, 10, 4, _MAPLE, _DEPT_CFG.format("MaPLe", "_c2_ep10_batch4_2ctx"))
_DEPT_SRC_NOTE = (
    f"{DEPT} releases no PromptSRC plug-in (CoOp, CoCoOp, KgCoOp, MaPLe only): PromptSRC's own schedule with "
    "DePT's head defaults"
)
_DEPT_SRC_B2N = Schedule(_SRC_B2N_OWN.lr, _SRC_B2N_OWN.epochs, 4, _SRC_B2N, _SRC_B2N_OWN.source, _DEPT_SRC_NOTE)
_DEPT_SRC_XD = Schedule(_SRC_XD.lr, _SRC_XD.epochs, 4, _SRC_XD.options, _SRC_XD.source, _DEPT_SRC_NOTE)
_DEPT_R_NOTE = "the RESTORE paper never ran DePT: its base method's restore_paper schedule, the head the only change"
_MMRL_NOTE = "AdamW (betas 0.9/0.999, Dassl's weight decay 5e-4) as the release trains it"
_MMRL_ADAMW = {"optimizer": "adamw"}
_MMRL_B2N = Schedule(
    0.001, 10, 4, {"n_rep_tokens": 5, "rep_start": 6, "alpha": 0.7},
    f"{MMRL}: scripts/mmrl/base2new_train.sh + configs/trainers/MMRL/vit_b16.yaml (ImageNet: vit_b16_imagenet.yaml, "
    "batch 32) + trainers/config.py (REG_WEIGHT, REP_DIM per dataset)",
    _MMRL_NOTE + "; ImageNet's batch 32 is not applied",
    imagenet_epochs=5, optim=_MMRL_ADAMW,
)  # fmt: skip
_MMRL_XD = Schedule(
    0.001, 1, 32, {"n_rep_tokens": 5, "rep_start": 6, "alpha": 0.7, "reg_weight": 0.2},
    f"{MMRL}: scripts/mmrl/cross_datasets_train.sh (REG_WEIGHT 0.2) + "
    "configs/trainers/MMRL/vit_b16_cross_datasets.yaml",
    _MMRL_NOTE + "; no warm-up epoch here (WARMUP_EPOCH 0)",
    optim={**_MMRL_ADAMW, "warmup_epochs": 0},
)  # fmt: skip
_MMRL_FEWSHOT = Schedule(
    0.001, 50, 32, {"n_rep_tokens": 5, "rep_start": 6, "alpha": 0.7},
    f"{MMRL}: scripts/mmrl/few_shot.sh + configs/trainers/MMRL/vit_b16_few_shot.yaml + trainers/config.py",
    _MMRL_NOTE,
    imagenet_epochs=5, optim=_MMRL_ADAMW,
)  # fmt: skip
_MMRL_R_NOTE = "the RESTORE paper never ran MMRL: MMRL's own schedule (10 epochs at batch 4, the set's shape already)"
_MMRL_OWN = {"b2n": _MMRL_B2N, "xd": _MMRL_XD, "fewshot": _MMRL_FEWSHOT}
_R_MMRL_NOTE = "RESTORE on MMRL has no release (the paper never ran MMRL): MMRL's own schedule in both sets"
# RESTORE on MMRL has no release: both sets give it MMRL's own schedule.
_R_MMRL = {p: dataclasses.replace(e, note=f"{_R_MMRL_NOTE}; {e.note}") for p, e in _MMRL_OWN.items()}
DEPT_MMRL_TABLE: dict[tuple[str, str], dict[str, Schedule]] = {
    ("dept_coop", "own"): {"b2n": _DEPT_COOP, "xd": _DEPT_COOP},
    ("dept_coop", "restore_paper"): {
        "b2n": dataclasses.replace(_R_COOP_B2N, note=_DEPT_R_NOTE),
        "xd": dataclasses.replace(_R_COOP_XD, note=_DEPT_R_NOTE),
    },
    ("dept_maple", "own"): {"b2n": _DEPT_MAPLE, "xd": _DEPT_MAPLE},
    ("dept_maple", "restore_paper"): {
        "b2n": dataclasses.replace(_R_MAPLE_B2N, note=_DEPT_R_NOTE),
        "xd": dataclasses.replace(_R_MAPLE_XD, note=_DEPT_R_NOTE),
    },
    ("dept_promptsrc", "own"): {"b2n": _DEPT_SRC_B2N, "xd": _DEPT_SRC_XD},
    ("dept_promptsrc", "restore_paper"): {
        "b2n": dataclasses.replace(_R_SRC_B2N, note=_DEPT_R_NOTE),
        "xd": dataclasses.replace(_R_SRC_XD, note=_DEPT_R_NOTE),
    },
    ("mmrl", "own"): _MMRL_OWN,
    ("mmrl", "restore_paper"): {
        "b2n": dataclasses.replace(_MMRL_B2N, note=_MMRL_R_NOTE),
        "xd": dataclasses.replace(_MMRL_XD, note=_MMRL_R_NOTE),
        "fewshot": dataclasses.replace(_MMRL_FEWSHOT, note=_MMRL_R_NOTE),
    },
    ("restore_mmrl", "own"): _R_MMRL,
    ("restore_mmrl", "restore_paper"): _R_MMRL,
}
# --- end DePT and MMRL ----------------------------------------------------------------------------------


def _each(entry: Schedule) -> dict[str, Schedule]:
    """One entry for every protocol (a release with one config for all of them)."""
    return {"b2n": entry, "xd": entry}


#: (method, set) -> protocol ("b2n", "xd", optionally "fewshot") -> Schedule.
TABLE: dict[tuple[str, str], dict[str, Schedule]] = {
    ("zeroshot", "own"): _each(_ZEROSHOT),
    ("zeroshot", "restore_paper"): _each(_ZEROSHOT),
    ("coop", "own"): _each(_COOP_OWN),
    ("coop", "restore_paper"): {"b2n": _R_COOP_B2N, "xd": _R_COOP_XD},
    ("cocoop", "own"): _each(_COCOOP_OWN),
    ("cocoop", "restore_paper"): {"b2n": _R_COCOOP_B2N, "xd": _R_COCOOP_XD},
    ("kgcoop", "own"): _each(_KGCOOP_OWN_ALL),
    ("kgcoop", "restore_paper"): {"b2n": _R_KGCOOP_B2N, "xd": _R_KGCOOP_XD},
    ("maple", "own"): {"b2n": _MAPLE_B2N, "xd": _MAPLE_XD},
    ("maple", "restore_paper"): {"b2n": _R_MAPLE_B2N, "xd": _R_MAPLE_XD},
    ("restore_m", "own"): {"b2n": _R_FSA_B2N, "xd": _R_FSA_XD},
    ("restore_m", "restore_paper"): {"b2n": _R_FSA_B2N, "xd": _R_FSA_XD},
    ("ivlp", "own"): _each(_IVLP_OWN),
    ("ivlp", "restore_paper"): {"b2n": _R_IVLP_B2N, "xd": _R_IVLP_XD},
    ("restore_ivlp", "own"): {"b2n": _R_IVLP_B2N, "xd": _R_IVLP_XD},
    ("restore_ivlp", "restore_paper"): {"b2n": _R_IVLP_B2N, "xd": _R_IVLP_XD},
    ("vpt", "own"): _each(_VPT_OWN),
    ("vpt", "restore_paper"): {"b2n": _R_VPT_B2N, "xd": _R_VPT_XD},
    ("deep_text", "own"): _each(_TEXT_OWN),
    ("deep_text", "restore_paper"): {"b2n": _R_TEXT_B2N, "xd": _R_TEXT_XD},
    ("promptsrc", "own"): {"b2n": _SRC_B2N_OWN, "xd": _SRC_XD, "fewshot": _SRC_FEWSHOT},
    ("promptsrc", "restore_paper"): {"b2n": _R_SRC_B2N, "xd": _R_SRC_XD},
    ("restore_p", "own"): {"b2n": _R_SRC_B2N, "xd": _R_SRC_XD},
    ("restore_p", "restore_paper"): {"b2n": _R_SRC_B2N, "xd": _R_SRC_XD},
    **DEPT_MMRL_TABLE,
}


# --- TCP (i16tcp) -----------------------------------------------------------------------------------------
TCP = "htyao89/Textual-based_Class-aware_prompt_tuning"
_TCP = {"n_ctx": 4, "ctx_init": None, "weight": 8.0, "insert_layer": 8}
_TCP_FILES = (
    f"{TCP}: scripts/base2new_train.sh (NCTX 4) + configs/trainers/TCP/vit_b16_ep100_ctxv1.yaml (lr 0.002, "
    "MAX_EPOCH 50, batch 32, CTX_INIT False) + trainers/tcp.py (loss weight 8.0), trainers/clip_text/model.py (layer 8)"
)
# Dassl's Adam (configs/trainers/TCP/vit_b16_ep100_ctxv1.yaml OPTIM.NAME adam) with the eps its README sets (1e-3)
_TCP_ADAM = {"optimizer": "adam", "adam_eps": 1e-3}
_TCP_OPTIM = "Adam with eps 1e-3 (the README's change to Dassl's optimizer, for fp16), as the release"
# SUN397 and ImageNet: 25 epochs in the authors' own log (scripts/nohup.out, removed in commit eec9d57: MAX_EPOCH 25)
# and the script's LOADEP=25, although the one config file says 50.
_TCP_25 = (("sun397", 25), ("imagenet", 25))
_TCP_OWN_B2N = Schedule(
    0.002, 50, 32, _TCP, _TCP_FILES, f"{_TCP_OPTIM}; SUN397 and ImageNet 25 epochs (LOADEP=25, the authors' log)",
    dataset_epochs=_TCP_25, optim=_TCP_ADAM,
)  # fmt: skip
_TCP_OWN_XD = Schedule(
    0.002, 50, 32, _TCP, _TCP_FILES,
    f"{_TCP_OPTIM}; the release has no cross-dataset script: its one config, ImageNet's 25 epochs",
    dataset_epochs=_TCP_25, optim=_TCP_ADAM,
)  # fmt: skip
_TCP_RESTORE = (
    "the RESTORE paper never ran TCP: the set's budget for a text-only CoOp-family method (its KgCoOp re-run, "
    f"{RESTORE}: configs/trainers/KgCoOp/vit_b16_ep10_ctxv1.yaml, ep2 crossdataset) with TCP's own settings and "
    "optimiser (Adam, eps 1e-3)"
)
_R_TCP_B2N = Schedule(0.002, 10, 4, _TCP, _TCP_FILES, _TCP_RESTORE, optim=_TCP_ADAM)
_R_TCP_XD = Schedule(0.002, 2, 4, _TCP, _TCP_FILES, _TCP_RESTORE, optim=_TCP_ADAM)
TABLE[("tcp", "own")] = {"b2n": _TCP_OWN_B2N, "xd": _TCP_OWN_XD}
TABLE[("tcp", "restore_paper")] = {"b2n": _R_TCP_B2N, "xd": _R_TCP_XD}
# --- end TCP ----------------------------------------------------------------------------------------------
# --- CLIP-LoRA (clip_lora, restore_lora) ----------------------------------------------------------------------
# MaxZanella/CLIP-LoRA trains a fixed number of iterations, 500 x shots (run_utils.py --n_iters 500; lora.py
# total_iters = n_iters * shots), batch 32, AdamW (lr 2e-4, weight decay 1e-2, betas 0.9/0.999), a cosine per
# iteration to 1e-6 and no warm-up. Our engine schedules per epoch, so the iterations become the epochs that
# hold them: ceil(500 x shots / steps per epoch), steps = the few-shot training images (shots x training
# classes) over the batch, the last incomplete batch dropped. The training classes come from the dataset's class
# count (`DatasetSpec.classes`; base: `base_class_count` under b2n); on a dataset without one, ``epochs``
# is used as it stands.
LORA = "MaxZanella/CLIP-LoRA"
LORA_ITERATIONS_PER_SHOT = 500
_LORA_OPTIM = {"optimizer": "adamw", "weight_decay": 0.01, "warmup_epochs": 0}
_LORA_NOTE = (
    "500 x shots iterations as epochs: ceil(500 x shots / steps per epoch) from the dataset's class count (DTD "
    "b2n 16 shots: 667, ImageNet 16; the epochs listed on a dataset it does not know); a per-epoch cosine to 0 "
    "where the release steps a per-iteration cosine to 1e-6"
)


def _class_count(dataset: str) -> int | None:
    """The registered dataset's class count (`DatasetSpec.classes`), or None for one without it."""
    try:
        return get_dataset(dataset).classes
    except ConfigError:
        return None


@dataclass(frozen=True)
class IterationSchedule(Schedule):
    """A release that trains ``iterations_per_shot`` x shots iterations: epochs from the dataset's classes."""

    iterations_per_shot: int = 0
    base_only: bool = False  # b2n trains on the base half of the classes

    def epochs_for(self, dataset: str, shots: int) -> int:
        n = _class_count(dataset) if dataset else None
        if n is None or shots <= 0:
            return self.epochs
        classes = base_class_count(n) if self.base_only else n
        images = shots * classes
        steps = images // self.batch_size if images >= self.batch_size else 1
        return math.ceil(self.iterations_per_shot * shots / steps)


def _lora(protocol_base: bool) -> IterationSchedule:
    return IterationSchedule(
        2e-4, 100, 32, {}, f"{LORA}: run_utils.py (lr, n_iters, batch_size) + lora.py (AdamW, cosine)", _LORA_NOTE,
        optim=_LORA_OPTIM, iterations_per_shot=LORA_ITERATIONS_PER_SHOT, base_only=protocol_base,
    )  # fmt: skip


_LORA_B2N, _LORA_ALL = _lora(True), _lora(False)
_R_LORA_NOTE = (
    "the RESTORE paper never ran CLIP-LoRA: its set's b2n shape (10 epochs, batch 4; xd 2 epochs) so every row "
    "of the set sees the same images, with CLIP-LoRA's optimiser (AdamW, lr 2e-4, weight decay 1e-2, no warm-up)"
)
_R_LORA_B2N = Schedule(2e-4, 10, 4, {}, f"{LORA}: lora.py (optimiser); {RESTORE}: the set's epochs", _R_LORA_NOTE,
                       optim=_LORA_OPTIM)  # fmt: skip
_R_LORA_XD = Schedule(2e-4, 2, 4, {}, f"{LORA}: lora.py (optimiser); {RESTORE}: the set's epochs", _R_LORA_NOTE,
                      optim=_LORA_OPTIM)  # fmt: skip
_LORA_ENTRIES = {
    ("clip_lora", "own"): {"b2n": _LORA_B2N, "xd": _LORA_ALL, "fewshot": _LORA_ALL},
    ("clip_lora", "restore_paper"): {"b2n": _R_LORA_B2N, "xd": _R_LORA_XD},
    # RESTORE on CLIP-LoRA has no release: both sets give it its base method's schedule of that set.
    ("restore_lora", "own"): {"b2n": _LORA_B2N, "xd": _LORA_ALL, "fewshot": _LORA_ALL},
    ("restore_lora", "restore_paper"): {"b2n": _R_LORA_B2N, "xd": _R_LORA_XD},
}
TABLE.update(_LORA_ENTRIES)
# --- end of CLIP-LoRA ---------------------------------------------------------------------------------------


def check_set(name: str) -> str:
    """``name`` if it is a schedule set; otherwise a `ConfigError` listing the sets."""
    if name not in SCHEDULE_SETS:
        raise ConfigError(
            f"unknown schedule set {name!r}; valid sets: {', '.join(SCHEDULE_SETS)}",
            hint="schedule: own (each method's release) or restore_paper (the RESTORE paper's re-runs)",
        )
    return name


def protocol_key(protocol: str, entries: Mapping[str, Schedule]) -> str:
    """Which entry a protocol reads: dg -> xd; train and fewshot -> fewshot where there is one, else b2n."""
    if protocol in ("xd", "dg"):
        return "xd"
    if protocol in ("train", "fewshot") and "fewshot" in entries:
        return "fewshot"
    return "b2n"


def schedule_for(method: str, schedule: str, protocol: str) -> Schedule | None:
    """The entry for (method, set, protocol); None for a method the table does not know (a plugin's),
    which then runs on the engine's generic defaults."""
    check_set(schedule)
    entries = TABLE.get((method, schedule))
    if entries is None:
        return None
    return entries[protocol_key(protocol, entries)]


def schedule_settings(method: str, schedule: str, protocol: str, dataset: str = "", shots: int = 16) -> dict[str, Any]:
    """Dotted run-config keys -> the values the set fills for this run (empty for an unknown method)."""
    entry = schedule_for(method, schedule, protocol)
    return {} if entry is None else entry.settings(dataset, shots)


def describe_schedules(method: str) -> list[dict[str, Any]]:
    """One row per (set, protocol entry) of a method: for `restore methods NAME` and the docs."""
    rows = []
    for name in SCHEDULE_SETS:
        for protocol, entry in (TABLE.get((method, name)) or {}).items():
            rule = ""
            if entry.epochs_by_shots or entry.imagenet_epochs is not None or entry.dataset_epochs:
                parts = [f"<={most} shots: {e}" for most, e in entry.epochs_by_shots]
                parts += [f"more: {entry.epochs}"] if entry.epochs_by_shots else []
                if entry.imagenet_epochs is not None:
                    parts.append(f"ImageNet: {entry.imagenet_epochs}")
                parts += [f"{name}: {epochs}" for name, epochs in entry.dataset_epochs]
                rule = "; ".join(parts)
            rows.append({
                "set": name, "protocol": protocol, "lr": entry.lr, "epochs": entry.epochs, "epochs_rule": rule,
                "batch_size": entry.batch_size,
                "options": dict(entry.options), "source": entry.source, "note": entry.note,
            })  # fmt: skip
    return rows
