"""`restore data download` against a real HTTP server on 127.0.0.1 serving generated archives."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from restore.data import load_dataset
from restore.data.dataset_commands import app
from restore.data.download import STAGING, download_dataset
from restore.data.fake import make_dataset_tree
from restore.data.registry import DatasetSpec, Resource, get_dataset, register_dataset, unregister_dataset
from restore.errors import DownloadError
from restore.transfer import part_path
from tests.local_http import Served, serve


def tar_gz(src_root: Path, members: list[str], extra: dict[str, bytes] | None = None) -> bytes:
    """A tar.gz of the trees `members` (relative to src_root), plus raw `extra` members (name -> bytes)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for m in members:
            tf.add(src_root / m, arcname=m)
        for name, data in (extra or {}).items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture
def dtd_source(tmp_path):
    """A generated DTD tree as the real archive holds it (top folder `dtd/`) and its split file, as bytes."""
    src = tmp_path / "src"
    fake = make_dataset_tree(src, "dtd", num_classes=3, per_class=(2, 1, 1))
    split = (src / "dtd" / "split_zhou_DescribableTextures.json").read_bytes()
    (src / "dtd" / "split_zhou_DescribableTextures.json").unlink()  # the real archive has no split file
    return fake, tar_gz(src, ["dtd"]), split


def dtd_spec(base: str, archive: bytes, **archive_options) -> DatasetSpec:
    return replace(
        get_dataset("dtd"),
        expected_sizes=(6, 3, 3),
        resources=(
            Resource(
                f"{base}/dtd-r1.0.1.tar.gz",
                "dtd-r1.0.1.tar.gz",
                md5=hashlib.md5(archive).hexdigest(),
                extract_to=".",
                creates="dtd/images",
                **archive_options,
            ),
            Resource(
                f"{base}/split.json",
                "split_zhou_DescribableTextures.json",
                save_as="dtd/split_zhou_DescribableTextures.json",
                is_split_file=True,
            ),
        ),
    )


def test_download_extract_place_split_file_and_skip_next_time(tmp_path, dtd_source):
    fake, archive, split = dtd_source
    served = Served(files={"/dtd-r1.0.1.tar.gz": archive, "/split.json": split})
    root = tmp_path / "data"
    with serve(served) as base:
        spec = dtd_spec(base, archive)
        result = download_dataset(spec, root, progress=False, log=lambda m: None)
        assert result.complete and result.fetched == ["dtd-r1.0.1.tar.gz", "split_zhou_DescribableTextures.json"]
        splits = load_dataset(spec, root)
        assert splits.sizes() == (6, 3, 3) and splits.classnames == fake.classnames
        assert not (root / STAGING).exists()  # archive deleted, staging cleaned
        again = download_dataset(spec, root, progress=False, log=lambda m: None)
    assert again.fetched == [] and len(again.in_place) == 2
    assert len(served.requests) == 2


def test_resume_after_an_interrupted_transfer(tmp_path, dtd_source):
    _, archive, split = dtd_source
    root = tmp_path / "data"
    half = len(archive) // 2
    partial = part_path(root / STAGING / "dtd-r1.0.1.tar.gz")
    partial.parent.mkdir(parents=True)
    partial.write_bytes(archive[:half])
    served = Served(files={"/dtd-r1.0.1.tar.gz": archive, "/split.json": split})
    with serve(served) as base:
        download_dataset(dtd_spec(base, archive), root, progress=False, log=lambda m: None)
        assert load_dataset("dtd", root).sizes() == (6, 3, 3)
    assert ("/dtd-r1.0.1.tar.gz", f"bytes={half}-") in served.requests


def test_a_dropped_connection_is_resumed(tmp_path, dtd_source):
    _, archive, split = dtd_source
    served = Served(files={"/dtd-r1.0.1.tar.gz": archive, "/split.json": split}, drop_next=1)
    with serve(served) as base:
        download_dataset(dtd_spec(base, archive), tmp_path, progress=False, log=lambda m: None)
    assert load_dataset("dtd", tmp_path).sizes() == (6, 3, 3)
    assert served.requests[1][1] is not None and served.requests[1][1].startswith("bytes=")


def test_checksum_mismatch_is_rejected(tmp_path, dtd_source):
    _, archive, split = dtd_source
    served = Served(files={"/dtd-r1.0.1.tar.gz": archive, "/split.json": split})
    with serve(served) as base:
        spec = dtd_spec(base, archive)
        bad_md5 = replace(spec, resources=(replace(spec.resources[0], md5="0" * 32), spec.resources[1]))
        with pytest.raises(DownloadError, match=r"checksum mismatch for dtd-r1\.0\.1\.tar\.gz: expected md5 0000"):
            download_dataset(bad_md5, tmp_path, progress=False, log=lambda m: None)
        assert not (tmp_path / STAGING / "dtd-r1.0.1.tar.gz").exists() and not (tmp_path / "dtd").exists()
        bad_sha = replace(spec, resources=(replace(spec.resources[0], sha256="f" * 64), spec.resources[1]))
        with pytest.raises(DownloadError, match="expected sha256 ffff"):
            download_dataset(bad_sha, tmp_path, progress=False, log=lambda m: None)
    assert not (tmp_path / "dtd").exists()


def test_an_archive_member_escaping_the_root_is_refused(tmp_path, dtd_source):
    fake, _, split = dtd_source
    evil = tar_gz(fake.root, ["dtd"], extra={"../evil.txt": b"gotcha"})
    root = tmp_path / "data"
    with (
        serve(Served(files={"/dtd-r1.0.1.tar.gz": evil, "/split.json": split})) as base,
        pytest.raises(DownloadError, match=r"member '\.\./evil\.txt' has a '\.\.' component"),
    ):
        download_dataset(dtd_spec(base, evil), root, progress=False, log=lambda m: None)
    assert not (tmp_path / "evil.txt").exists() and not (root / "evil.txt").exists()
    assert not (root / "dtd").exists()


def test_a_split_file_that_is_not_the_published_one_is_rejected(tmp_path, dtd_source):
    _, archive, split = dtd_source
    short = json.loads(split)
    short["test"] = short["test"][:-1]
    with serve(Served(files={"/dtd-r1.0.1.tar.gz": archive, "/split.json": json.dumps(short).encode()})) as base:
        with pytest.raises(DownloadError, match=r"has sizes \(6, 3, 2\), not the published \(6, 3, 3\)"):
            download_dataset(dtd_spec(base, archive), tmp_path, progress=False, log=lambda m: None)
        with serve(Served(files={"/split.json": b"<html>quota exceeded</html>"})) as base2:
            spec = dtd_spec(base, archive)
            html = replace(spec, resources=(replace(spec.resources[1], url=f"{base2}/split.json"),))
            with pytest.raises(DownloadError, match="is not a valid split file"):
                download_dataset(html, tmp_path, progress=False, log=lambda m: None)
    assert not (tmp_path / "dtd" / "split_zhou_DescribableTextures.json").exists()


def test_mirror_is_tried_when_the_main_url_fails(tmp_path, dtd_source):
    _, archive, split = dtd_source
    with serve(Served(files={"/mirror/dtd.tar.gz": archive, "/split.json": split})) as base:
        spec = dtd_spec(base, archive, mirrors=(f"{base}/mirror/dtd.tar.gz",))
        download_dataset(spec, tmp_path, progress=False, log=lambda m: None)
    assert load_dataset("dtd", tmp_path).sizes() == (6, 3, 3)


def test_nested_archive_and_moved_folder(tmp_path):
    # Caltech101's zip holds caltech-101/101_ObjectCategories.tar.gz; FGVC's tar holds fgvc-aircraft-2013b/data.
    src = tmp_path / "src"
    make_dataset_tree(src, "caltech101", num_classes=2, per_class=(2, 1, 1))
    inner = tar_gz(src / "caltech-101", ["101_ObjectCategories"])
    zbuf = io.BytesIO()
    with zipfile.ZipFile(zbuf, "w") as zf:
        zf.writestr("caltech-101/101_ObjectCategories.tar.gz", inner)
        zf.writestr("caltech-101/show_annotation.m", "% not needed")
    make_dataset_tree(src / "fg", "fgvc_aircraft", num_classes=2, per_class=(1, 1, 1))
    (src / "fg" / "fgvc_aircraft").rename(src / "fg" / "data")
    fgvc = tar_gz(src / "fg", ["data"])
    fgvc = tar_gz_prefixed(fgvc, "fgvc-aircraft-2013b/")
    files = {
        "/caltech-101.zip": zbuf.getvalue(),
        "/split.json": (src / "caltech-101" / "split_zhou_Caltech101.json").read_bytes(),
        "/fgvc.tar.gz": fgvc,
    }
    root = tmp_path / "data"
    with serve(Served(files=files)) as base:
        cal = get_dataset("caltech101")
        cal = replace(cal, expected_sizes=None, resources=(
            replace(cal.resources[0], url=f"{base}/caltech-101.zip", md5=None),
            replace(cal.resources[1], url=f"{base}/split.json"),
        ))  # fmt: skip
        download_dataset(cal, root, progress=False, log=lambda m: None)
        fg = get_dataset("fgvc_aircraft")
        fg = replace(fg, resources=(replace(fg.resources[0], url=f"{base}/fgvc.tar.gz"),))
        download_dataset(fg, root, progress=False, log=lambda m: None)
    assert load_dataset("caltech101", root).sizes() == (4, 2, 2)
    assert not (root / "caltech-101" / "101_ObjectCategories.tar.gz").exists()
    assert load_dataset("fgvc_aircraft", root).sizes() == (2, 2, 2)
    assert not (root / "fgvc-aircraft-2013b").exists()


def tar_gz_prefixed(archive: bytes, prefix: str) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(archive)) as src, tarfile.open(fileobj=out, mode="w:gz") as dst:
        for m in src.getmembers():
            data = src.extractfile(m) if m.isfile() else None
            m.name = prefix + m.name
            dst.addfile(m, data)
    return out.getvalue()


def test_manual_datasets_print_instructions_and_exit_1(tmp_path):
    result = CliRunner().invoke(app, ["download", "imagenet-sketch", "--root", str(tmp_path)])
    assert result.exit_code == 1
    assert "needs a manual step" in result.output and "HaohanWang/ImageNet-Sketch" in result.output
    assert "imagenet-sketch/images/<wnid>" in result.output


def test_manual_dataset_still_gets_its_public_split_file(tmp_path):
    split = json.dumps({"train": [["cars_train/00001.jpg", 0, "car"]], "val": [], "test": []}).encode()
    with serve(Served(files={"/cars.json": split})) as base:
        cars = get_dataset("stanford_cars")
        cars = replace(cars, expected_sizes=None, resources=(replace(cars.resources[0], url=f"{base}/cars.json"),))
        result = download_dataset(cars, tmp_path, progress=False, log=lambda m: None)
    assert not result.complete and "offline" in result.manual
    assert (tmp_path / "stanford_cars" / "split_zhou_StanfordCars.json").read_bytes() == split


def test_cli_download_end_to_end(tmp_path, dtd_source):
    _, archive, split = dtd_source
    with serve(Served(files={"/dtd-r1.0.1.tar.gz": archive, "/split.json": split})) as base:
        spec = dtd_spec(base, archive)
        arc, spl = spec.resources
        # A registered dataset of its own, whose archive's top folder dtd/ is moved to where it expects it.
        local = replace(
            spec,
            name="local_dtd",
            title="LocalDTD",
            folder="local_dtd",
            aliases=(),
            resources=(
                replace(arc, move=(("dtd", "local_dtd"),), creates="local_dtd/images"),
                replace(spl, save_as="local_dtd/split_zhou_DescribableTextures.json"),
            ),
        )
        register_dataset(local)
        try:
            result = CliRunner().invoke(app, ["download", "LocalDTD", "--root", str(tmp_path)])
        finally:
            unregister_dataset("local_dtd")
    assert result.exit_code == 0, result.output
    assert "local_dtd: ready, 3 classes, train/val/test (6, 3, 3)" in result.output
    assert not (tmp_path / "dtd").exists()
