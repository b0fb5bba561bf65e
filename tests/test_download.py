"""restore.transfer against a real HTTP server on 127.0.0.1, and safe_extract against hostile archives."""

from __future__ import annotations

import hashlib
import io
import os
import socket
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from restore.errors import DownloadError
from restore.transfer import download_file, part_path, safe_extract
from tests.local_http import Served, serve

PAYLOAD = os.urandom(3 * (1 << 20) + 12345)  # several read chunks, not a multiple of one
DIGEST = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture
def served():
    s = Served(files={"/w/model.bin": PAYLOAD})
    with serve(s) as base:
        s.base = base  # type: ignore[attr-defined]
        yield s


def test_download_shows_progress_verifies_and_renames(served, tmp_path, capsys):
    dest = tmp_path / "cache" / "model.bin"
    out = download_file(served.base + "/w/model.bin", dest, DIGEST, progress=True)
    assert out == dest and dest.read_bytes() == PAYLOAD
    assert not part_path(dest).exists()
    err = capsys.readouterr().err
    assert "model.bin" in err and "100%" in err  # tqdm's bar went to stderr
    # A second call finds the verified file and makes no request.
    n = len(served.requests)
    assert download_file(served.base + "/w/model.bin", dest, DIGEST) == dest
    assert len(served.requests) == n


def test_no_progress_output_when_disabled(served, tmp_path, capsys):
    download_file(served.base + "/w/model.bin", tmp_path / "m.bin", DIGEST, progress=False)
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""


def test_checksum_mismatch_is_rejected_and_not_left_behind(served, tmp_path):
    dest = tmp_path / "model.bin"
    wrong = hashlib.sha256(b"something else").hexdigest()
    url = served.base + "/w/model.bin"
    with pytest.raises(DownloadError) as e:
        download_file(url, dest, wrong, progress=False)
    msg = str(e.value)
    assert wrong in msg and DIGEST in msg and url in msg and "mismatch" in msg
    assert not dest.exists() and not part_path(dest).exists()


def test_interrupted_download_resumes_with_range(served, tmp_path):
    dest = tmp_path / "model.bin"
    url = served.base + "/w/model.bin"
    served.drop_next = 1
    with pytest.raises(DownloadError) as e:
        download_file(url, dest, DIGEST, progress=False, retries=0)
    assert url in str(e.value) and str(dest) in str(e.value)  # names the URL and where to put it by hand
    part = part_path(dest)
    assert not dest.exists() and 0 < part.stat().st_size < len(PAYLOAD)
    kept = part.stat().st_size
    download_file(url, dest, DIGEST, progress=False)
    assert dest.read_bytes() == PAYLOAD and not part.exists()
    assert served.requests[-1] == ("/w/model.bin", f"bytes={kept}-")


def test_dropped_connection_is_retried_from_where_it_stopped(served, tmp_path):
    dest = tmp_path / "model.bin"
    served.drop_next = 1
    download_file(served.base + "/w/model.bin", dest, DIGEST, progress=False, retries=2)
    assert dest.read_bytes() == PAYLOAD
    assert [r[1] is not None for r in served.requests] == [False, True]


def test_server_ignoring_range_gives_a_full_download(served, tmp_path):
    dest = tmp_path / "model.bin"
    part_path(dest).write_bytes(b"stale bytes that are not the file's start")
    served.honour_range = False
    download_file(served.base + "/w/model.bin", dest, DIGEST, progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert served.requests[-1][1] is not None  # it asked for a range and coped with a 200


def test_complete_partial_file_is_finished_without_a_body(served, tmp_path):
    dest = tmp_path / "model.bin"
    part_path(dest).write_bytes(PAYLOAD)
    download_file(served.base + "/w/model.bin", dest, DIGEST, progress=False)
    assert dest.read_bytes() == PAYLOAD


def test_resume_false_discards_a_partial_file(served, tmp_path):
    dest = tmp_path / "model.bin"
    part_path(dest).write_bytes(PAYLOAD[:1000])
    download_file(served.base + "/w/model.bin", dest, DIGEST, progress=False, resume=False)
    assert dest.read_bytes() == PAYLOAD and served.requests[-1][1] is None


def test_http_error_names_url_and_destination(served, tmp_path):
    dest = tmp_path / "missing.bin"
    url = served.base + "/w/missing.bin"
    with pytest.raises(DownloadError) as e:
        download_file(url, dest, progress=False)
    assert "404" in str(e.value) and url in str(e.value) and str(dest) in e.value.hint
    assert not dest.exists() and not part_path(dest).exists()


def test_unreachable_server_names_url_and_destination(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/model.bin"
    dest = tmp_path / "model.bin"
    with pytest.raises(DownloadError) as e:
        download_file(url, dest, progress=False, retries=0, timeout=5)
    assert url in str(e.value) and str(dest) in str(e.value)


def test_existing_file_with_wrong_checksum_is_reported_not_replaced(served, tmp_path):
    dest = tmp_path / "model.bin"
    dest.write_bytes(b"a file the user put here")
    with pytest.raises(DownloadError) as e:
        download_file(served.base + "/w/model.bin", dest, DIGEST, progress=False)
    assert str(dest) in str(e.value) and DIGEST in str(e.value)
    assert dest.read_bytes() == b"a file the user put here" and served.requests == []


# --- safe_extract -------------------------------------------------------------------------------------------


def _tar(path: Path, members: list[tarfile.TarInfo | tuple[str, bytes]], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tf:
        for m in members:
            if isinstance(m, tarfile.TarInfo):
                tf.addfile(m)
            else:
                info = tarfile.TarInfo(m[0])
                info.size = len(m[1])
                tf.addfile(info, io.BytesIO(m[1]))
    return path


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


@pytest.mark.parametrize("mode,suffix", [("w", ".tar"), ("w:gz", ".tar.gz"), ("w:gz", ".tgz")])
def test_tar_is_extracted(tmp_path, mode, suffix):
    archive = _tar(tmp_path / f"a{suffix}", [("top/a.txt", b"alpha"), ("top/sub/b.bin", b"\x00\x01")], mode)
    files = safe_extract(archive, tmp_path / "out")
    out = (tmp_path / "out").resolve()
    assert files == [out / "top/a.txt", out / "top/sub/b.bin"]
    assert (out / "top/a.txt").read_bytes() == b"alpha" and (out / "top/sub/b.bin").read_bytes() == b"\x00\x01"


def test_zip_is_extracted(tmp_path):
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("d/", "")
        zf.writestr("d/x.txt", "ex")
        zf.writestr("y.txt", "why")
    files = safe_extract(archive, tmp_path / "out")
    out = (tmp_path / "out").resolve()
    assert sorted(files) == [out / "d/x.txt", out / "y.txt"]
    assert (out / "d/x.txt").read_text() == "ex"


@pytest.mark.parametrize(
    "bad,why",
    [
        (("../x", b"evil"), "'..'"),
        (("ok/../../x", b"evil"), "'..'"),
        (("/etc/evil", b"evil"), "absolute"),
        (_link("link", "/etc/passwd"), "link"),
        (_link("hard", "../outside", tarfile.LNKTYPE), "link"),
        (_link("dev", "", tarfile.CHRTYPE), "special"),
    ],
)
def test_hostile_tar_member_is_refused_and_nothing_extracted(tmp_path, bad, why):
    archive = _tar(tmp_path / "a.tar.gz", [("first.txt", b"fine"), bad])
    out = tmp_path / "deep" / "out"
    with pytest.raises(DownloadError) as e:
        safe_extract(archive, out)
    name = bad.name if isinstance(bad, tarfile.TarInfo) else bad[0]
    assert repr(name) in str(e.value) and why in str(e.value)
    assert not out.exists() and not (tmp_path / "x").exists() and not (tmp_path / "deep" / "x").exists()


@pytest.mark.parametrize("name,why", [("../x", "'..'"), ("/abs/x", "absolute"), ("C:/x", "absolute")])
def test_hostile_zip_member_is_refused(tmp_path, name, why):
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("first.txt", "fine")
        zf.writestr(zipfile.ZipInfo(name), "evil")
    with pytest.raises(DownloadError) as e:
        safe_extract(archive, tmp_path / "out")
    assert repr(name) in str(e.value) and why in str(e.value)
    assert not (tmp_path / "out").exists()


def test_zip_symlink_is_refused(tmp_path):
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        info = zipfile.ZipInfo("link")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(DownloadError, match="'link' has a link"):
        safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_not_an_archive_and_damaged_archive(tmp_path):
    junk = tmp_path / "page.zip"
    junk.write_bytes(b"<html>not found</html>")
    with pytest.raises(DownloadError, match="not a zip or tar archive"):
        safe_extract(junk, tmp_path / "out")
    good = _tar(tmp_path / "a.tar.gz", [("a.bin", os.urandom(200_000))])
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(good.read_bytes()[:5000])
    with pytest.raises(DownloadError, match="damaged archive"):
        safe_extract(cut, tmp_path / "out2")
    assert not (tmp_path / "out2").exists()
