"""Transforms against an independent computation; the image dataset and loader, including worker errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode

from restore.data import ImageDataset, eval_transform, load_dataset, make_loader, train_transform
from restore.data.batches import unwrap_worker_error
from restore.data.fake import make_dataset_tree
from restore.errors import ConfigError, DataError

MEAN = np.array([0.48145466, 0.4578275, 0.40821073])
STD = np.array([0.26862954, 0.26130258, 0.27577711])


def reference_eval(image: Image.Image, size: int) -> np.ndarray:
    """CLIP's preprocessing by hand: shorter side to `size` (bicubic), centre crop, /255, normalise."""
    w, h = image.size
    scale = size / min(w, h)
    nw, nh = (size, int(size * h / w)) if w <= h else (int(size * w / h), size)
    assert min(nw, nh) == size and scale > 0
    resized = image.convert("RGB").resize((nw, nh), Image.BICUBIC)
    left, top = round((nw - size) / 2.0), round((nh - size) / 2.0)
    crop = np.asarray(resized.crop((left, top, left + size, top + size)), dtype=np.float64) / 255.0
    return ((crop - MEAN) / STD).transpose(2, 0, 1)


@pytest.mark.parametrize(("w", "h"), [(300, 200), (200, 300), (64, 64), (31, 57)])
def test_eval_transform_matches_clip_preprocessing(w, h):
    rng = np.random.default_rng(w * h)
    image = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    got = eval_transform(32)(image).numpy()
    assert got.shape == (3, 32, 32) and got.dtype == np.float32
    np.testing.assert_allclose(got, reference_eval(image, 32), atol=1e-5)


def test_eval_transform_converts_grayscale():
    image = Image.fromarray(np.full((40, 50), 128, dtype=np.uint8), "L")
    x = eval_transform(16)(image)
    expected = (128 / 255 - MEAN) / STD
    np.testing.assert_allclose(x[:, 8, 8].numpy(), expected, atol=1e-5)


def test_train_transform_is_random_and_seedable():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 80, 3), dtype=np.uint8))
    t = train_transform(24)
    torch.manual_seed(5)
    a = [t(image) for _ in range(6)]
    torch.manual_seed(5)
    b = [t(image) for _ in range(6)]
    assert all(x.shape == (3, 24, 24) for x in a)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(a[0], x) for x in a[1:])
    # Values stay those of a normalised [0, 1] image.
    lo, hi = (0 - MEAN) / STD, (1 - MEAN) / STD
    assert all(x.min() >= lo.min() - 1e-4 and x.max() <= hi.max() + 1e-4 for x in a)


def test_train_transform_crop_scale_and_flip():
    # A left-dark/right-bright image: a full-scale crop either keeps or mirrors the gradient.
    arr = np.tile(np.linspace(0, 255, 64, dtype=np.uint8)[None, :, None], (64, 1, 3))
    image = Image.fromarray(arr)
    t = train_transform(64)
    rrc = t.transforms[1]
    assert rrc.scale == (0.08, 1.0) and rrc.interpolation == InterpolationMode.BICUBIC
    torch.manual_seed(0)
    directions = set()
    for _ in range(30):
        x = t(image)
        directions.add(bool(x[0, :, -1].mean() > x[0, :, 0].mean()))
    assert directions == {True, False}
    assert train_transform(64, min_scale=0.5).transforms[1].scale == (0.5, 1.0)  # data.crop_min_scale


@pytest.fixture
def tree(tmp_path):
    return make_dataset_tree(tmp_path, "dtd", num_classes=4, per_class=(6, 1, 1), size=12, corrupt=1, seed=3)


def test_image_dataset_returns_tensors_and_labels(tmp_path):
    make_dataset_tree(tmp_path, "dtd", num_classes=3, per_class=(2, 1, 1), size=20)
    splits = load_dataset("dtd", tmp_path)
    ds = ImageDataset(splits.train, eval_transform(16))
    x, y = ds[3]
    assert x.shape == (3, 16, 16) and y == splits.train[3].label and len(ds) == 6
    # Class-dependent colours: images of different classes differ on average.
    means = [ds[i][0].mean(dim=(1, 2)) for i in (0, 2, 4)]
    assert not torch.allclose(means[0], means[1], atol=0.1)


def test_corrupt_image_names_the_file_in_process_and_from_workers(tree):
    splits = load_dataset("dtd", tree.root)
    bad = tree.corrupt[0]
    with pytest.raises(DataError, match=f"cannot decode image {bad}"):
        for _ in make_loader(splits.train, eval_transform(8), 4, shuffle=False, workers=0, seed=0):
            pass
    it = iter(make_loader(splits.train, eval_transform(8), 4, shuffle=False, workers=2, seed=0))
    with pytest.raises(DataError) as e:
        for _ in it:
            pass
    # The workers are stopped with the error (not left to garbage collection, which takes seconds).
    assert not any(w.is_alive() for w in it._it._workers)
    assert e.value.message.startswith(f"cannot decode image {bad}")
    assert "in a data-loader worker" in e.value.message and "Traceback" not in e.value.message
    assert "verify" in e.value.hint


def test_skip_mode_counts_what_it_left_out(tree):
    splits = load_dataset("dtd", tree.root)
    ds = ImageDataset(splits.train, eval_transform(8), on_corrupt="skip", check_workers=2)
    assert [p for p, _ in ds.skipped] == tree.corrupt
    assert ds.skipped[0][1].startswith("corrupt")
    assert len(ds) == ds.listed - 1 == 23 and ds.notes == ["skipped 1 of 24 images (1 bad files)"]
    batches = list(make_loader(ds, None, 5, shuffle=True, workers=0, seed=1))
    assert sum(len(b[1]) for b in batches) == 23


def test_loader_order_and_augmentation_follow_the_seed(tmp_path):
    make_dataset_tree(tmp_path, "dtd", num_classes=4, per_class=(5, 1, 1), size=16)
    items = load_dataset("dtd", tmp_path).train

    def run(seed, workers):
        loader = make_loader(items, train_transform(8), 4, shuffle=True, workers=workers, seed=seed)
        return [(x.clone(), y.clone()) for x, y in loader]

    a, b, c = run(7, 2), run(7, 2), run(8, 2)
    assert all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b, strict=True))
    assert [y.tolist() for _, y in a] != [y.tolist() for _, y in c]
    assert sorted(label for _, y in a for label in y.tolist()) == sorted(d.label for d in items)


def test_loader_arguments(tmp_path):
    make_dataset_tree(tmp_path, "dtd", num_classes=2, per_class=(3, 1, 1), size=8)
    items = load_dataset("dtd", tmp_path).train
    sampler = torch.utils.data.SequentialSampler(items)
    with pytest.raises(ConfigError, match="either shuffle"):
        make_loader(items, None, 2, shuffle=True, workers=0, seed=0, sampler=sampler)
    loader = make_loader(items, eval_transform(8), 4, shuffle=False, workers=0, seed=0, drop_last=True)
    assert [len(y) for _, y in loader] == [4]
    with pytest.raises(ConfigError):
        ImageDataset(items, None, on_corrupt="ignore")  # type: ignore[arg-type]


def test_unwrap_worker_error_keeps_message_and_hint():
    text = (
        "Caught DataError in DataLoader worker process 1.\nOriginal Traceback (most recent call last):\n"
        '  File "x.py", line 1, in f\nrestore.errors.DataError: cannot decode image /a/b.jpg: broken\n'
        "  hint: re-download it\n"
    )
    e = unwrap_worker_error(text)
    assert e.message == "cannot decode image /a/b.jpg: broken (in a data-loader worker)"
    assert e.hint == "re-download it"
