"""The registry: CoOp's names and layouts, name lookup, registering new datasets."""

from __future__ import annotations

import pytest

from restore.data import DatasetSpec, get_dataset, list_datasets, load_dataset, register_dataset
from restore.data.registry import unregister_dataset
from restore.errors import ConfigError

# Folder, image folder and split file of every dataset, as CoOp's DATASETS.md and datasets/*.py lay them out.
COOP_LAYOUT = {
    "ImageNet": ("imagenet", "images", None),
    "Caltech101": ("caltech-101", "101_ObjectCategories", "split_zhou_Caltech101.json"),
    "OxfordPets": ("oxford_pets", "images", "split_zhou_OxfordPets.json"),
    "StanfordCars": ("stanford_cars", "", "split_zhou_StanfordCars.json"),
    "OxfordFlowers": ("oxford_flowers", "jpg", "split_zhou_OxfordFlowers.json"),
    "Food101": ("food-101", "images", "split_zhou_Food101.json"),
    "FGVCAircraft": ("fgvc_aircraft", "images", None),
    "SUN397": ("sun397", "SUN397", "split_zhou_SUN397.json"),
    "DescribableTextures": ("dtd", "images", "split_zhou_DescribableTextures.json"),
    "EuroSAT": ("eurosat", "2750", "split_zhou_EuroSAT.json"),
    "UCF101": ("ucf101", "UCF-101-midframes", "split_zhou_UCF101.json"),
    "ImageNetV2": ("imagenetv2", "imagenetv2-matched-frequency-format-val", None),
    "ImageNetSketch": ("imagenet-sketch", "images", None),
    "ImageNetA": ("imagenet-adversarial", "imagenet-a", None),
    "ImageNetR": ("imagenet-rendition", "imagenet-r", None),
}


def test_the_15_datasets_have_coops_layout():
    assert len(list_datasets()) >= 15
    for coop_name, (folder, image_dir, split_file) in COOP_LAYOUT.items():
        spec = get_dataset(coop_name)
        assert (spec.folder, spec.image_dir, spec.split_file) == (folder, image_dir, split_file), coop_name
    assert {get_dataset(n).name for n in COOP_LAYOUT} == set(list_datasets()[:15])


@pytest.mark.parametrize(
    ("alias", "name"),
    [
        ("dtd", "dtd"),
        ("DescribableTextures", "dtd"),
        ("describable_textures", "dtd"),
        ("OxfordPets", "oxford_pets"),
        ("oxford_pets", "oxford_pets"),
        ("Flowers102", "oxford_flowers"),
        ("caltech-101", "caltech101"),
        ("ImageNet-A", "imagenet_a"),
        ("imagenet-rendition", "imagenet_r"),
        ("IMAGENETV2", "imagenet_v2"),
        ("fgvc_aircraft", "fgvc_aircraft"),
        ("food-101", "food101"),
    ],
)
def test_names_are_case_and_punctuation_insensitive(alias, name):
    assert get_dataset(alias).name == name


def test_unknown_dataset_lists_the_known_ones(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_dataset("mnist", tmp_path)
    assert "unknown dataset 'mnist'" in e.value.message
    assert "oxford_pets" in e.value.hint and "imagenet_r" in e.value.hint


def test_test_only_and_fewshot_flags():
    assert all(get_dataset(n).test_only for n in ("imagenet_v2", "imagenet_sketch", "imagenet_a", "imagenet_r"))
    assert not get_dataset("imagenet").fewshot_val and get_dataset("dtd").fewshot_val


def test_register_a_split_file_dataset_and_load_it(tmp_path):
    from restore.data.fake import make_dataset_tree

    spec = DatasetSpec(name="toy_shapes", title="ToyShapes", folder="toy", split_file="split_toy.json")
    register_dataset(spec)
    try:
        fake = make_dataset_tree(tmp_path, "ToyShapes", num_classes=3, per_class=(2, 1, 1))
        assert (tmp_path / "toy" / "split_toy.json").is_file()
        splits = load_dataset("toy-shapes", tmp_path)
        assert splits.sizes() == (6, 3, 3) and splits.classnames == fake.classnames
        assert all(d.path.is_relative_to(tmp_path / "toy" / "images") for d in splits.train)
        with pytest.raises(ConfigError, match="already registered"):
            register_dataset(spec)
        with pytest.raises(ConfigError, match="already refer to"):
            register_dataset(DatasetSpec(name="other", title="Other", folder="dtd", split_file="x.json"))
    finally:
        unregister_dataset("toy_shapes")
    with pytest.raises(ConfigError):
        get_dataset("toy_shapes")


def test_a_spec_needs_a_split_file_or_a_reader():
    with pytest.raises(ConfigError, match="neither a split file nor a reader"):
        DatasetSpec(name="broken", title="Broken", folder="broken")
