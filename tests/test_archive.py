"""kdpipe.data.archive: checksummed downloads and extraction that does not trust the archive."""

import hashlib
import io
import os
import tarfile
import urllib.error
import zipfile
from pathlib import Path

import pytest

from kdpipe.data.archive import ArchiveError, fetch, safe_extract, sha256_of

GOOD_FILES = {
    "top.txt": b"hello archive\n",
    "pkg/a.txt": b"alpha\n",
    "pkg/sub/b.bin": bytes(range(256)) * 3,
    "pkg/empty.dat": b"",
}


# ----------------------------------------------------------------------------- helpers


def _add_bytes(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tf.addfile(info, io.BytesIO(data))


def _write_tar(path: Path, files: dict[str, bytes], extra: list[tarfile.TarInfo] = ()) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        dirs = sorted({str(Path(n).parent) for n in files} - {"."})
        for d in dirs:
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            tf.addfile(info)
        for name, data in files.items():
            _add_bytes(tf, name, data)
        for info in extra:
            tf.addfile(info, io.BytesIO(b"x" * info.size) if info.isfile() else None)
    return path


def _write_zip(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def _files_under(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _assert_nothing_left(target: Path) -> None:
    assert not target.exists() and not target.is_symlink()
    leftovers = sorted(p.name for p in target.parent.glob(f".{target.name}-extract-*"))
    assert leftovers == [], f"temporary extraction folders left behind: {leftovers}"


# ----------------------------------------------------------------------------- sha256_of


def test_sha256_of_known_vector(tmp_path):
    p = tmp_path / "abc"
    p.write_bytes(b"abc")
    # FIPS 180-2 test vector for "abc".
    assert sha256_of(p) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_sha256_of_multi_chunk_file(tmp_path):
    data = os.urandom((1 << 20) * 2 + 12345)  # spans several 1 MiB read chunks
    p = tmp_path / "big.bin"
    p.write_bytes(data)
    assert sha256_of(str(p)) == hashlib.sha256(data).hexdigest()


# ----------------------------------------------------------------------------- good archives


def test_safe_extract_tar_gz(tmp_path):
    archive = _write_tar(tmp_path / "good.tar.gz", GOOD_FILES)
    target = tmp_path / "work" / "out"
    result = safe_extract(archive, target)
    assert Path(result) == target
    assert _files_under(target) == GOOD_FILES
    assert (target / "pkg" / "sub").is_dir()
    assert list(target.parent.glob(".out-extract-*")) == []


def test_safe_extract_zip(tmp_path):
    archive = _write_zip(tmp_path / "good.zip", GOOD_FILES)
    target = tmp_path / "work" / "out"
    result = safe_extract(str(archive), str(target))
    assert Path(result) == target
    assert _files_under(target) == GOOD_FILES
    assert list(target.parent.glob(".out-extract-*")) == []


def test_safe_extract_replaces_an_existing_target(tmp_path):
    target = tmp_path / "out"
    (target / "pkg").mkdir(parents=True)
    (target / "stale.txt").write_text("from an earlier run")
    (target / "pkg" / "a.txt").write_text("old content")
    safe_extract(_write_tar(tmp_path / "good.tar.gz", GOOD_FILES), target)
    assert _files_under(target) == GOOD_FILES


# ----------------------------------------------------------------------------- hostile archives


def _tar_traversal(tmp_path: Path) -> Path:
    return _write_tar(tmp_path / "evil.tar.gz", {"ok.txt": b"fine"}, [_file_info("../evil.txt")])


def _tar_deep_traversal(tmp_path: Path) -> Path:
    return _write_tar(tmp_path / "evil.tar.gz", {"ok.txt": b"fine"}, [_file_info("pkg/../../../evil.txt")])


def _tar_absolute(tmp_path: Path) -> Path:
    outside = tmp_path / "outside" / "evil.txt"
    return _write_tar(tmp_path / "evil.tar.gz", {"ok.txt": b"fine"}, [_file_info(str(outside))])


def _tar_absolute_tmp(tmp_path: Path) -> Path:
    # A literal /tmp path, unique to this test so the check below cannot see someone else's file.
    return _write_tar(tmp_path / "evil.tar.gz", {"ok.txt": b"fine"}, [_file_info(f"/tmp/evil-{tmp_path.name}-{os.getpid()}")])


def _tar_symlink(tmp_path: Path) -> Path:
    link = tarfile.TarInfo("evil-link")
    link.type = tarfile.SYMTYPE
    link.linkname = str(tmp_path / "outside")
    return _write_tar(tmp_path / "evil.tar.gz", {"ok.txt": b"fine"}, [link])


def _tar_relative_symlink(tmp_path: Path) -> Path:
    # Harmless-looking: points inside the archive. Links are refused all the same.
    link = tarfile.TarInfo("pkg/alias.txt")
    link.type = tarfile.SYMTYPE
    link.linkname = "a.txt"
    return _write_tar(tmp_path / "evil.tar.gz", {"pkg/a.txt": b"alpha"}, [link])


def _tar_hardlink(tmp_path: Path) -> Path:
    link = tarfile.TarInfo("evil-hard")
    link.type = tarfile.LNKTYPE
    link.linkname = str(tmp_path / "secret.txt")
    return _write_tar(tmp_path / "evil.tar.gz", {"ok.txt": b"fine"}, [link])


def _tar_fifo(tmp_path: Path) -> Path:
    fifo = tarfile.TarInfo("pipe")
    fifo.type = tarfile.FIFOTYPE
    return _write_tar(tmp_path / "evil.tar.gz", {"ok.txt": b"fine"}, [fifo])


def _zip_traversal(tmp_path: Path) -> Path:
    return _write_zip(tmp_path / "evil.zip", {"ok.txt": b"fine", "../evil.txt": b"pwned"})


def _zip_symlink(tmp_path: Path) -> Path:
    path = tmp_path / "evil.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("ok.txt", b"fine")
        info = zipfile.ZipInfo("evil-link")
        info.create_system = 3  # unix
        info.external_attr = (0o120777 << 16)  # S_IFLNK
        zf.writestr(info, str(tmp_path / "outside"))
    return path


def _file_info(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = 5
    info.mode = 0o644
    return info


HOSTILE = {
    "tar-dotdot": _tar_traversal,
    "tar-deep-dotdot": _tar_deep_traversal,
    "tar-absolute": _tar_absolute,
    "tar-absolute-tmp": _tar_absolute_tmp,
    "tar-symlink": _tar_symlink,
    "tar-relative-symlink": _tar_relative_symlink,
    "tar-hardlink": _tar_hardlink,
    "tar-fifo": _tar_fifo,
    "zip-dotdot": _zip_traversal,
    "zip-symlink": _zip_symlink,
}


@pytest.mark.parametrize("make", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_archive_is_refused_and_leaves_nothing(tmp_path, make):
    (tmp_path / "secret.txt").write_text("do not touch")
    archive = make(tmp_path)
    # The archive itself must really carry the hostile member (guards against a vacuous test).
    if tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tf:
            assert any(not (m.isfile() or m.isdir()) or ".." in m.name or m.name.startswith("/") for m in tf)
    target = tmp_path / "work" / "out"
    before = {p for p in tmp_path.rglob("*")}

    with pytest.raises(ArchiveError, match="refusing archive member"):
        safe_extract(archive, target)

    _assert_nothing_left(target)
    # Nothing new anywhere: no escaped file beside the temp folder, in tmp_path, or in /tmp.
    assert {p for p in tmp_path.rglob("*")} - before <= {tmp_path / "work"}
    assert not (tmp_path / "work" / "evil.txt").exists()
    assert not (tmp_path / "evil.txt").exists()
    assert not (tmp_path / "outside").exists()
    assert not Path(f"/tmp/evil-{tmp_path.name}-{os.getpid()}").exists()
    assert (tmp_path / "secret.txt").read_text() == "do not touch"


def test_hostile_archive_keeps_an_existing_target(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "keep.txt").write_text("previous good extraction")
    with pytest.raises(ArchiveError):
        safe_extract(_tar_traversal(tmp_path), target)
    assert _files_under(target) == {"keep.txt": b"previous good extraction"}
    assert list(tmp_path.glob(".out-extract-*")) == []


def test_corrupt_archive_raises_and_leaves_nothing(tmp_path):
    archive = tmp_path / "junk.tar.gz"
    archive.write_bytes(b"\x1f\x8b" + os.urandom(200))  # gzip magic, garbage body
    target = tmp_path / "out"
    with pytest.raises(Exception):
        safe_extract(archive, target)
    _assert_nothing_left(target)


# ----------------------------------------------------------------------------- fetch


def _serve(http_server, name: str, data: bytes) -> str:
    (http_server.root / name).write_bytes(data)
    return http_server.url(name)


def test_http_server_fixture_serves_its_folder(http_server):
    import urllib.request

    url = _serve(http_server, "hello.txt", b"hi there")
    assert url.startswith("http://127.0.0.1:")
    with urllib.request.urlopen(url) as response:
        assert response.read() == b"hi there"


def test_fetch_with_correct_md5(http_server, tmp_path):
    data = os.urandom(100_000)
    url = _serve(http_server, "blob.bin", data)
    dest = tmp_path / "downloads" / "nested" / "saved.bin"  # parent folders do not exist yet
    result = fetch(url, dest, md5=hashlib.md5(data).hexdigest())
    assert Path(result) == dest
    assert dest.read_bytes() == data
    assert sorted(p.name for p in dest.parent.iterdir()) == ["saved.bin"]


def test_fetch_without_md5(http_server, tmp_path):
    data = b"no checksum given"
    dest = tmp_path / "dl" / "x.txt"
    fetch(_serve(http_server, "x.txt", data), dest)
    assert dest.read_bytes() == data
    assert sorted(p.name for p in dest.parent.iterdir()) == ["x.txt"]


def test_fetch_wrong_md5_is_refused_and_discarded(http_server, tmp_path):
    data = b"the bytes on the server"
    url = _serve(http_server, "blob.bin", data)
    expected = hashlib.md5(b"the bytes we were promised").hexdigest()
    actual = hashlib.md5(data).hexdigest()
    assert expected != actual
    dest = tmp_path / "downloads" / "blob.bin"

    with pytest.raises(ArchiveError) as excinfo:
        fetch(url, dest, md5=expected)

    message = str(excinfo.value)
    assert "md5" in message
    assert expected in message
    assert actual in message
    assert list(dest.parent.iterdir()) == []  # no dest file, no .download-* folder


def test_fetch_wrong_md5_keeps_an_existing_file(http_server, tmp_path):
    url = _serve(http_server, "blob.bin", b"tampered")
    dest = tmp_path / "blob.bin"
    dest.write_bytes(b"known good")
    with pytest.raises(ArchiveError):
        fetch(url, dest, md5=hashlib.md5(b"known good").hexdigest())
    assert dest.read_bytes() == b"known good"
    assert list(tmp_path.glob(".download-*")) == []


def test_fetch_404_raises_and_leaves_nothing(http_server, tmp_path):
    dest = tmp_path / "downloads" / "missing.bin"
    with pytest.raises((urllib.error.URLError, OSError, RuntimeError)) as excinfo:
        fetch(http_server.url("does-not-exist.bin"), dest, md5="0" * 32)
    if isinstance(excinfo.value, urllib.error.HTTPError):
        assert excinfo.value.code == 404
    assert list(dest.parent.iterdir()) == []


# --- archives with no published checksum (pix2pix): trust on first use -----------------------


def _tar_bytes(content: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        info = tarfile.TarInfo("cityscapes/train/1.jpg")
        info.size = len(content)
        tf.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def test_first_download_records_its_sha256_and_later_ones_must_match(http_server, tmp_path):
    first = _tar_bytes(b"first version")
    (http_server.root / "cityscapes.tar.gz").write_bytes(first)
    dest_dir = tmp_path / "raw"
    record = dest_dir / "cityscapes.tar.gz.sha256"
    fetch(http_server.url("cityscapes.tar.gz"), dest_dir / "cityscapes.tar.gz", record_sha256=record)
    assert record.read_text().strip() == hashlib.sha256(first).hexdigest()
    (dest_dir / "cityscapes.tar.gz").unlink()
    # The same archive again: accepted.
    fetch(http_server.url("cityscapes.tar.gz"), dest_dir / "cityscapes.tar.gz", record_sha256=record)
    (dest_dir / "cityscapes.tar.gz").unlink()
    # A different archive at the same URL: refused, nothing written, the record unchanged.
    (http_server.root / "cityscapes.tar.gz").write_bytes(_tar_bytes(b"something else"))
    with pytest.raises(ArchiveError, match="sha256 mismatch.*first download"):
        fetch(http_server.url("cityscapes.tar.gz"), dest_dir / "cityscapes.tar.gz", record_sha256=record)
    assert sorted(p.name for p in dest_dir.iterdir()) == ["cityscapes.tar.gz.sha256"]
    assert record.read_text().strip() == hashlib.sha256(first).hexdigest()


def test_an_error_page_is_never_recorded_as_the_trusted_archive(http_server, tmp_path):
    (http_server.root / "cityscapes.tar.gz").write_bytes(b"<html>Service unavailable</html>")
    raw = tmp_path / "raw"
    with pytest.raises(ArchiveError, match="did not return an archive"):
        fetch(http_server.url("cityscapes.tar.gz"), raw / "cityscapes.tar.gz", record_sha256=raw / "cityscapes.tar.gz.sha256")
    assert sorted(p.name for p in raw.iterdir()) == []


def test_configured_sha256_wins_over_the_record(http_server, tmp_path):
    (http_server.root / "a.tar.gz").write_bytes(b"payload")
    good = hashlib.sha256(b"payload").hexdigest()
    with pytest.raises(ArchiveError, match="sha256 mismatch.*the config"):
        fetch(http_server.url("a.tar.gz"), tmp_path / "a.tar.gz", sha256="0" * 64)
    assert not (tmp_path / "a.tar.gz").exists()
    fetch(http_server.url("a.tar.gz"), tmp_path / "a.tar.gz", sha256=good)
    assert (tmp_path / "a.tar.gz").read_bytes() == b"payload"
