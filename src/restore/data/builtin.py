"""The 15 benchmark datasets, in the folder layout and with the split files of CoOp's DATASETS.md.

Archive URLs and md5 sums are those torchvision and the dataset authors publish; split files and UCF101's
middle frames are the CoOp authors' Google Drive files (the `drive.usercontent` form downloads without a
confirmation page). Split files are checked by content (their published train/val/test sizes) rather than by
hash, so a re-serialised but identical split file is still accepted.
"""

from __future__ import annotations

from dataclasses import replace

from restore.data.readers import (
    read_fgvc_aircraft,
    read_imagenet,
    read_imagenet_v2,
    wnid_folder_reader,
)
from restore.data.registry import DatasetSpec, Resource, register_dataset


def gdrive(file_id: str) -> str:
    return f"https://drive.usercontent.google.com/download?id={file_id}&export=download&confirm=t"


def split_resource(folder: str, split_file: str, drive_id: str) -> Resource:
    return Resource(gdrive(drive_id), split_file, save_as=f"{folder}/{split_file}", is_split_file=True)


# Published (train, val, test) sizes of the CoOp split files: a downloaded or user-supplied split file that
# differs is not the standard one, and results on it are not comparable with published numbers.
SPLIT_SIZES: dict[str, tuple[int, int, int]] = {
    "caltech101": (4128, 1649, 2465),
    "dtd": (2820, 1128, 1692),
    "eurosat": (13500, 5400, 8100),
    "oxford_flowers": (4093, 1633, 2463),
    "oxford_pets": (2944, 736, 3669),
    "stanford_cars": (6509, 1635, 8041),
    "ucf101": (7639, 1898, 3783),
    "food101": (50500, 20200, 30300),
    "sun397": (15880, 3970, 19850),
    "fgvc_aircraft": (3334, 3333, 3333),
}

_IMAGENET_MANUAL = """ImageNet cannot be downloaded automatically (its licence requires an account).
  1. Request access and download ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar from https://image-net.org.
  2. Extract them so that ROOT/imagenet/images/train/<wnid>/*.JPEG and ROOT/imagenet/images/val/<wnid>/*.JPEG
     (1000 folders n01440764 ... each; the val images must be sorted into wnid folders, e.g. with the
     valprep.sh script of the PyTorch ImageNet example).
  3. Optional: `restore data download imagenet --root ROOT` then fetches CoOp's classnames.txt into
     ROOT/imagenet/ (otherwise open_clip's standard class names are used)."""

_CARS_MANUAL = """StanfordCars' original download links (ai.stanford.edu/~jkrause/car196) are offline.
  1. Get cars_train/, cars_test/, devkit/ and cars_test_annos_withlabels.mat from a mirror you trust (e.g. the
     Kaggle dataset 'jessicali9530/stanford-cars-dataset' plus the devkit from the original page's archive).
  2. Place them so that ROOT/stanford_cars/cars_train/*.jpg and ROOT/stanford_cars/cars_test/*.jpg exist.
  3. `restore data download stanford_cars --root ROOT` fetches split_zhou_StanfordCars.json next to them."""

_SKETCH_MANUAL = """ImageNet-Sketch is distributed through Google Drive / Kaggle, not a stable direct URL.
  1. Download ImageNet-Sketch.zip following https://github.com/HaohanWang/ImageNet-Sketch.
  2. Extract it and rename its top folder `sketch/` so that ROOT/imagenet-sketch/images/<wnid>/*.JPEG
     (1000 folders).
  3. Optional: copy ROOT/imagenet/classnames.txt to ROOT/imagenet-sketch/."""


def _register_all() -> None:
    specs = [
        DatasetSpec(
            name="imagenet",
            title="ImageNet",
            classes=1000,
            folder="imagenet",
            image_dir="images",
            aliases=("imagenet1k", "ilsvrc2012"),
            reader=read_imagenet,
            files_listed=True,
            fewshot_val=False,
            layout="  imagenet/images/train/<wnid>/*.JPEG   (1000 folders)\n"
            "  imagenet/images/val/<wnid>/*.JPEG\n  imagenet/classnames.txt   (optional)",
            resources=(
                Resource(
                    gdrive("1-61f_ol79pViBFDG_IDlUQSwoLcn2XXF"), "classnames.txt", save_as="imagenet/classnames.txt"
                ),
            ),
            manual=_IMAGENET_MANUAL,
            description="1000 object classes; cross-dataset and domain-generalisation source",
        ),
        DatasetSpec(
            name="caltech101",
            title="Caltech101",
            classes=100,
            folder="caltech-101",
            image_dir="101_ObjectCategories",
            split_file="split_zhou_Caltech101.json",
            aliases=("caltech",),
            resources=(
                Resource(
                    "https://data.caltech.edu/records/mzrjq-6wc02/files/caltech-101.zip",
                    "caltech-101.zip",
                    creates="caltech-101/101_ObjectCategories",
                    md5="3138e1922a9193bfa496528edbbc45d0",
                    extract_to=".",
                    inner=("caltech-101/101_ObjectCategories.tar.gz",),
                ),
                split_resource("caltech-101", "split_zhou_Caltech101.json", "1hyarUivQE36mY6jSomru6Fjd-JzwcCzN"),
            ),
            description="100 object classes",
        ),
        DatasetSpec(
            name="oxford_pets",
            title="OxfordPets",
            classes=37,
            folder="oxford_pets",
            image_dir="images",
            split_file="split_zhou_OxfordPets.json",
            aliases=("pets", "oxfordiiitpet"),
            resources=(
                Resource(
                    "https://www.robots.ox.ac.uk/~vgg/data/pets/data/images.tar.gz",
                    "oxford_pets-images.tar.gz",
                    creates="oxford_pets/images",
                    md5="5c4f3ee8e5d25df40f4fd59a7f44e54c",
                    extract_to="oxford_pets",
                ),
                Resource(
                    "https://www.robots.ox.ac.uk/~vgg/data/pets/data/annotations.tar.gz",
                    "oxford_pets-annotations.tar.gz",
                    creates="oxford_pets/annotations",
                    md5="95a8c909bbe2e81eed6a22bccdf3f68f",
                    extract_to="oxford_pets",
                ),
                split_resource("oxford_pets", "split_zhou_OxfordPets.json", "1501r8Ber4nNKvmlFVQZ8SeUHTcdTTEqs"),
            ),
            description="37 cat and dog breeds",
        ),
        DatasetSpec(
            name="stanford_cars",
            title="StanfordCars",
            classes=196,
            folder="stanford_cars",
            image_dir="",
            split_file="split_zhou_StanfordCars.json",
            aliases=("cars",),
            layout="  stanford_cars/cars_train/*.jpg\n  stanford_cars/cars_test/*.jpg\n"
            "  stanford_cars/split_zhou_StanfordCars.json",
            resources=(
                split_resource("stanford_cars", "split_zhou_StanfordCars.json", "1ObCFbaAgVu0I-k_Au-gIUcefirdAuizT"),
            ),
            manual=_CARS_MANUAL,
            description="196 car models",
        ),
        DatasetSpec(
            name="oxford_flowers",
            title="OxfordFlowers",
            classes=102,
            folder="oxford_flowers",
            image_dir="jpg",
            split_file="split_zhou_OxfordFlowers.json",
            aliases=("flowers102", "flowers"),
            resources=(
                Resource(
                    "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/102flowers.tgz",
                    "102flowers.tgz",
                    creates="oxford_flowers/jpg",
                    md5="52808999861908f626f3c1f4e79d11fa",
                    extract_to="oxford_flowers",
                ),
                Resource(
                    "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/imagelabels.mat",
                    "imagelabels.mat",
                    md5="e0620be6f572b9609742df49c70aed4d",
                    save_as="oxford_flowers/imagelabels.mat",
                ),
                Resource(
                    gdrive("1AkcxCXeK_RCGCEC_GvmWxjcjaNhu-at0"),
                    "cat_to_name.json",
                    save_as="oxford_flowers/cat_to_name.json",
                ),
                split_resource("oxford_flowers", "split_zhou_OxfordFlowers.json", "1Pp0sRXzZFZq15zVOzKjKBu4A9i01nozT"),
            ),
            description="102 flower species",
        ),
        DatasetSpec(
            name="food101",
            title="Food101",
            classes=101,
            folder="food-101",
            image_dir="images",
            split_file="split_zhou_Food101.json",
            aliases=("food",),
            resources=(
                Resource(
                    "http://data.vision.ee.ethz.ch/cvl/food-101.tar.gz",
                    "food-101.tar.gz",
                    creates="food-101/images",
                    md5="85eeb15f3717b99a5da872d97d918f87",
                    extract_to=".",
                ),
                split_resource("food-101", "split_zhou_Food101.json", "1QK0tGi096I0Ba6kggatX1ee6dJFIcEJl"),
            ),
            description="101 dishes",
        ),
        DatasetSpec(
            name="fgvc_aircraft",
            title="FGVCAircraft",
            classes=100,
            folder="fgvc_aircraft",
            image_dir="images",
            aliases=("aircraft", "fgvc"),
            reader=read_fgvc_aircraft,
            layout="  fgvc_aircraft/images/*.jpg\n  fgvc_aircraft/variants.txt\n"
            "  fgvc_aircraft/images_variant_{train,val,test}.txt",
            resources=(
                Resource(
                    "https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/archives/fgvc-aircraft-2013b.tar.gz",
                    "fgvc-aircraft-2013b.tar.gz",
                    creates="fgvc_aircraft/images",
                    extract_to=".",
                    move=(("fgvc-aircraft-2013b/data", "fgvc_aircraft"),),
                ),
            ),
            description="100 aircraft variants (its own split files, no split_zhou file)",
        ),
        DatasetSpec(
            name="sun397",
            title="SUN397",
            classes=397,
            folder="sun397",
            image_dir="SUN397",
            split_file="split_zhou_SUN397.json",
            aliases=("sun",),
            resources=(
                Resource(
                    "http://vision.princeton.edu/projects/2010/SUN/SUN397.tar.gz",
                    "SUN397.tar.gz",
                    creates="sun397/SUN397",
                    md5="8ca2778205c41d23104230ba66911c7a",
                    extract_to="sun397",
                ),
                split_resource("sun397", "split_zhou_SUN397.json", "1y2RD81BYuiyvebdN-JymPfyWYcd8_MUq"),
            ),
            description="397 scene categories",
        ),
        DatasetSpec(
            name="dtd",
            title="DescribableTextures",
            classes=47,
            folder="dtd",
            image_dir="images",
            split_file="split_zhou_DescribableTextures.json",
            aliases=("textures",),
            resources=(
                Resource(
                    "https://www.robots.ox.ac.uk/~vgg/data/dtd/download/dtd-r1.0.1.tar.gz",
                    "dtd-r1.0.1.tar.gz",
                    creates="dtd/images",
                    md5="fff73e5086ae6bdbea199a49dfb8a4c1",
                    extract_to=".",
                ),
                split_resource("dtd", "split_zhou_DescribableTextures.json", "1u3_QfB467jqHgNXC00UIzbLZRQCg2S7x"),
            ),
            description="47 texture classes",
        ),
        DatasetSpec(
            name="eurosat",
            title="EuroSAT",
            classes=10,
            folder="eurosat",
            image_dir="2750",
            split_file="split_zhou_EuroSAT.json",
            resources=(
                Resource(
                    # The original madm.dfki.de link is offline; this is torchgeo's copy, as torchvision uses.
                    "https://huggingface.co/datasets/torchgeo/eurosat/resolve/c877bcd43f099cd0196738f714544e355477f3fd/EuroSAT.zip",
                    "EuroSAT.zip",
                    creates="eurosat/2750",
                    md5="c8fa014336c82ac7804f0398fcb19387",
                    extract_to="eurosat",
                ),
                split_resource("eurosat", "split_zhou_EuroSAT.json", "1Ip7yaCWFi0eaOFUGga0lUdVi_DDQth1o"),
            ),
            description="10 satellite land-use classes",
        ),
        DatasetSpec(
            name="ucf101",
            title="UCF101",
            classes=101,
            folder="ucf101",
            image_dir="UCF-101-midframes",
            split_file="split_zhou_UCF101.json",
            aliases=("ucf",),
            resources=(
                Resource(
                    gdrive("10Jqome3vtUA2keJkNanAiFpgbyC9Hc2O"),
                    "UCF-101-midframes.zip",
                    extract_to="ucf101",
                    creates="ucf101/UCF-101-midframes",
                ),
                split_resource("ucf101", "split_zhou_UCF101.json", "1I0S0q91hJfsV9Gf4xDIjgDq4AqBNJb1y"),
            ),
            description="101 actions (middle video frames)",
        ),
        DatasetSpec(
            name="imagenet_v2",
            title="ImageNetV2",
            folder="imagenetv2",
            image_dir="imagenetv2-matched-frequency-format-val",
            reader=read_imagenet_v2,
            test_only=True,
            files_listed=True,
            layout="  imagenetv2/imagenetv2-matched-frequency-format-val/<label 0..999>/*.jpeg\n"
            "  imagenetv2/classnames.txt   (optional)",
            resources=(
                Resource(
                    "https://huggingface.co/datasets/vaishaal/ImageNetV2/resolve/main/imagenetv2-matched-frequency.tar.gz",
                    "imagenetv2-matched-frequency.tar.gz",
                    creates="imagenetv2/imagenetv2-matched-frequency-format-val",
                    extract_to="imagenetv2",
                    mirrors=(
                        "https://s3-us-west-2.amazonaws.com/imagenetv2public/imagenetv2-matched-frequency.tar.gz",
                    ),
                ),
            ),
            description="ImageNet test set re-collected (matched frequency); test only",
        ),
        DatasetSpec(
            name="imagenet_sketch",
            title="ImageNetSketch",
            folder="imagenet-sketch",
            image_dir="images",
            aliases=("sketch",),
            reader=wnid_folder_reader("imagenet"),
            test_only=True,
            files_listed=True,
            layout="  imagenet-sketch/images/<wnid>/*.JPEG   (1000 folders)\n"
            "  imagenet-sketch/classnames.txt   (optional)",
            manual=_SKETCH_MANUAL,
            description="sketches of the 1000 ImageNet classes; test only",
        ),
        DatasetSpec(
            name="imagenet_a",
            title="ImageNetA",
            folder="imagenet-adversarial",
            image_dir="imagenet-a",
            aliases=("imagenetadversarial",),
            reader=wnid_folder_reader("imagenet_a"),
            test_only=True,
            files_listed=True,
            layout="  imagenet-adversarial/imagenet-a/<wnid>/*.jpg   (200 folders)\n"
            "  imagenet-adversarial/classnames.txt   (optional)",
            resources=(
                Resource(
                    "https://people.eecs.berkeley.edu/~hendrycks/imagenet-a.tar",
                    "imagenet-a.tar",
                    creates="imagenet-adversarial/imagenet-a",
                    extract_to="imagenet-adversarial",
                ),
            ),
            description="natural adversarial examples, 200 ImageNet classes; test only",
        ),
        DatasetSpec(
            name="imagenet_r",
            title="ImageNetR",
            folder="imagenet-rendition",
            image_dir="imagenet-r",
            aliases=("imagenetrendition",),
            reader=wnid_folder_reader("imagenet_r"),
            test_only=True,
            files_listed=True,
            layout="  imagenet-rendition/imagenet-r/<wnid>/*.jpg   (200 folders)\n"
            "  imagenet-rendition/classnames.txt   (optional)",
            resources=(
                Resource(
                    "https://people.eecs.berkeley.edu/~hendrycks/imagenet-r.tar",
                    "imagenet-r.tar",
                    creates="imagenet-rendition/imagenet-r",
                    extract_to="imagenet-rendition",
                ),
            ),
            description="renditions (art, cartoons, ...) of 200 ImageNet classes; test only",
        ),
    ]
    for spec in specs:
        register_dataset(replace(spec, expected_sizes=SPLIT_SIZES.get(spec.name)))


BUILTIN_NAMES = (
    "imagenet",
    "caltech101",
    "oxford_pets",
    "stanford_cars",
    "oxford_flowers",
    "food101",
    "fgvc_aircraft",
    "sun397",
    "dtd",
    "eurosat",
    "ucf101",
    "imagenet_v2",
    "imagenet_sketch",
    "imagenet_a",
    "imagenet_r",
)
# The ten cross-dataset targets and the four domain-generalisation targets, in the papers' table order.
XD_TARGETS = BUILTIN_NAMES[1:11]
DG_TARGETS = BUILTIN_NAMES[11:]

_register_all()
