"""Text templates for class names: the single per-dataset templates of the CoOp family and CLIP's ensembles.

Sources: CoOp's ``CUSTOM_TEMPLATES`` (zero-shot CLIP baseline of CoOp/CoCoOp/MaPLe); KgCoOp's copy, which
differs for DTD; CLIP's ``data/prompts.md`` (per-dataset ensembles) and its ImageNet notebook (80 templates,
as shipped by open_clip); PromptSRC's ``IMAGENET_TEMPLATES`` (60 of those 80, its teacher ensemble).
Dataset keys are the CoOp class names (``DescribableTextures``, ``OxfordPets``, ...).
"""

from __future__ import annotations

import string

from restore.errors import ConfigError
from restore.openclip_files import open_clip_module
from restore.options import short

_PHOTO = "a photo of a {}."

# CoOp trainers/zsclip.py CUSTOM_TEMPLATES: the single template of the zero-shot CLIP baseline.
COOP_TEMPLATES: dict[str, str] = {
    "OxfordPets": "a photo of a {}, a type of pet.",
    "OxfordFlowers": "a photo of a {}, a type of flower.",
    "FGVCAircraft": "a photo of a {}, a type of aircraft.",
    "DescribableTextures": "{} texture.",
    "EuroSAT": "a centered satellite photo of {}.",
    "StanfordCars": _PHOTO,
    "Food101": "a photo of {}, a type of food.",
    "SUN397": _PHOTO,
    "Caltech101": _PHOTO,
    "UCF101": "a photo of a person doing {}.",
    "ImageNet": _PHOTO,
    "ImageNetSketch": _PHOTO,
    "ImageNetV2": _PHOTO,
    "ImageNetA": _PHOTO,
    "ImageNetR": _PHOTO,
}

# KgCoOp trainers/kgcoop.py: the same, except DTD.
KGCOOP_TEMPLATES: dict[str, str] = {**COOP_TEMPLATES, "DescribableTextures": "a photo of a {}, a type of texture."}

IMAGENET_80: tuple[str, ...] = tuple(t("{}") for t in open_clip_module("zero_shot_metadata").OPENAI_IMAGENET_TEMPLATES)

# PromptSRC trainers/imagenet_templates.py IMAGENET_TEMPLATES: the teacher ensemble for every dataset.
PROMPTSRC_60: tuple[str, ...] = (
    "a photo of a {}.", "a bad photo of a {}.", "a photo of many {}.", "a sculpture of a {}.",
    "a photo of the hard to see {}.", "a low resolution photo of the {}.", "a rendering of a {}.",
    "graffiti of a {}.", "a bad photo of the {}.", "a cropped photo of the {}.", "a tattoo of a {}.",
    "the embroidered {}.", "a photo of a hard to see {}.", "a bright photo of a {}.", "a photo of a clean {}.",
    "a photo of a dirty {}.", "a dark photo of the {}.", "a drawing of a {}.", "a photo of my {}.",
    "the plastic {}.", "a photo of the cool {}.", "a close-up photo of a {}.",
    "a black and white photo of the {}.", "a painting of the {}.", "a painting of a {}.",
    "a pixelated photo of the {}.", "a sculpture of the {}.", "a bright photo of the {}.",
    "a cropped photo of a {}.", "a plastic {}.", "a photo of the dirty {}.", "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.", "a photo of the {}.", "a good photo of the {}.", "a rendering of the {}.",
    "a {} in a video game.", "a photo of one {}.", "a doodle of a {}.", "a close-up photo of the {}.",
    "the origami {}.", "the {} in a video game.", "a sketch of a {}.", "a doodle of the {}.",
    "a origami {}.", "a low resolution photo of a {}.", "the toy {}.", "a rendition of the {}.",
    "a photo of the clean {}.", "a photo of a large {}.", "a rendition of a {}.", "a photo of a nice {}.",
    "a photo of a weird {}.", "a blurry photo of a {}.", "a cartoon {}.", "art of a {}.",
    "a sketch of the {}.", "a embroidered {}.", "a pixelated photo of a {}.", "itap of the {}.",
)  # fmt: skip

_UCF_VERBS = ("", "using ", "doing ", "during ", "performing ", "practicing ")

# CLIP data/prompts.md: the ensembles CLIP reported zero-shot numbers with.
CLIP_ENSEMBLES: dict[str, tuple[str, ...]] = {
    "ImageNet": IMAGENET_80,
    "ImageNetSketch": IMAGENET_80,
    "ImageNetV2": IMAGENET_80,
    "ImageNetA": IMAGENET_80,
    "ImageNetR": IMAGENET_80,
    "Caltech101": (
        "a photo of a {}.", "a painting of a {}.", "a plastic {}.", "a sculpture of a {}.", "a sketch of a {}.",
        "a tattoo of a {}.", "a toy {}.", "a rendition of a {}.", "a embroidered {}.", "a cartoon {}.",
        "a {} in a video game.", "a plushie {}.", "a origami {}.", "art of a {}.", "graffiti of a {}.",
        "a drawing of a {}.", "a doodle of a {}.", "a photo of the {}.", "a painting of the {}.",
        "the plastic {}.", "a sculpture of the {}.", "a sketch of the {}.", "a tattoo of the {}.", "the toy {}.",
        "a rendition of the {}.", "the embroidered {}.", "the cartoon {}.", "the {} in a video game.",
        "the plushie {}.", "the origami {}.", "art of the {}.", "graffiti of the {}.", "a drawing of the {}.",
        "a doodle of the {}.",
    ),
    "DescribableTextures": (
        "a photo of a {} texture.", "a photo of a {} pattern.", "a photo of a {} thing.",
        "a photo of a {} object.", "a photo of the {} texture.", "a photo of the {} pattern.",
        "a photo of the {} thing.", "a photo of the {} object.",
    ),
    "EuroSAT": (
        "a centered satellite photo of {}.", "a centered satellite photo of a {}.",
        "a centered satellite photo of the {}.",
    ),
    "FGVCAircraft": ("a photo of a {}, a type of aircraft.", "a photo of the {}, a type of aircraft."),
    "OxfordFlowers": ("a photo of a {}, a type of flower.",),
    "Food101": ("a photo of {}, a type of food.",),
    "OxfordPets": ("a photo of a {}, a type of pet.",),
    "StanfordCars": (
        "a photo of a {}.", "a photo of the {}.", "a photo of my {}.", "i love my {}!", "a photo of my dirty {}.",
        "a photo of my clean {}.", "a photo of my new {}.", "a photo of my old {}.",
    ),
    "SUN397": ("a photo of a {}.", "a photo of the {}."),
    "UCF101": tuple(
        f"{kind} of {article} person {verb}{{}}."
        for verb in _UCF_VERBS
        for article in ("a", "the")
        for kind in ("a photo", "a video", "a example", "a demonstration")
    ),
}  # fmt: skip


def single_template(dataset: str | None) -> str:
    """The CoOp-family zero-shot template of a dataset (``a photo of a {}.`` for anything unknown)."""
    return COOP_TEMPLATES.get(dataset or "", _PHOTO)


def ensemble(dataset: str | None) -> tuple[str, ...]:
    """CLIP's template ensemble for a dataset; the 80 ImageNet templates for anything else."""
    return CLIP_ENSEMBLES.get(dataset or "", IMAGENET_80)


def check_template(template: str) -> str:
    """A literal template must hold exactly one ``{}`` (the class name) and no other braces: ``str.format``
    would otherwise fail mid-run (IndexError, KeyError) or leave a field empty."""
    try:
        fields = [(name, spec, conv) for _, name, spec, conv in string.Formatter().parse(template) if name is not None]
    except ValueError:
        fields = None
    if fields != [("", "", None)]:
        raise ConfigError(
            f"template {short(template)} must hold exactly one {{}} (the class name) and no other braces",
            hint="e.g. --templates 'a photo of a {}.' (write a literal brace as {{ or }})",
        )
    return template


def resolve(spec: str, dataset: str | None) -> tuple[str, ...]:
    """A template setting as configs write it: ``single``, ``ensemble``, ``imagenet80``, ``promptsrc60``,
    or a literal template containing ``{}``."""
    if spec == "single":
        return (single_template(dataset),)
    if spec == "ensemble":
        return ensemble(dataset)
    if spec == "imagenet80":
        return IMAGENET_80
    if spec == "promptsrc60":
        return PROMPTSRC_60
    if "{}" in spec:
        return (check_template(spec),)
    raise ConfigError(
        f"unknown template setting {spec!r}",
        hint="use single, ensemble, imagenet80, promptsrc60, or a template with {} for the class name",
    )
