"""Fetching and unpacking raw archives without trusting them.

A download lands in a temporary folder beside its destination and is moved into place only
after its checksum matched, so a failed or tampered download leaves nothing behind. An archive
placed by hand is checked the same way (``verify``) before it is unpacked. Extraction refuses
links, device files and any member whose path would leave the target folder, and unpacks into
a temporary folder that is renamed into place only when every member is in.

Every failure a user can fix (no network, a 404, a truncated download, an HTML page saved
instead of the archive, a wrong checksum) raises ``ArchiveError`` naming the URL or file, the
likely cause and what to do.
"""

import contextlib
import gzip
import hashlib
import http.client
import lzma
import os
import shutil
import tarfile
import tempfile
import urllib.error
import zipfile
import zlib
from pathlib import Path

from torchvision.datasets.utils import calculate_md5, download_url

from kdpipe.errors import ArchiveError
from kdpipe.io import atomic_write_text

# What a damaged or truncated archive raises while it is read (besides ArchiveError).
_UNREADABLE = (EOFError, tarfile.TarError, zipfile.BadZipFile, zlib.error, gzip.BadGzipFile, lzma.LZMAError)
# Leading bytes of the formats tarfile and zipfile read (a plain tar says "ustar" at offset 257).
_MAGIC = (b"\x1f\x8b", b"PK\x03\x04", b"PK\x05\x06", b"BZh", b"\xfd7zXZ\x00")


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def describe(path: str | os.PathLike) -> str | None:
    """What ``path`` is when it cannot be an archive (``None`` when its first bytes look like one)."""
    with open(path, "rb") as fh:
        head = fh.read(512)
    if not head:
        return "an empty file"
    if head.startswith(_MAGIC) or head[257:262] == b"ustar":
        return None
    start = head.lstrip().lower()
    if start.startswith((b"<!doctype html", b"<html", b"<?xml", b"<head", b"<body")) or b"<html" in start:
        return "an HTML page (an error or login page served instead of the archive?)"
    return "not a .tar.gz or .zip archive"


def checksum_note(md5: str | None = None, sha256: str | None = None, record_sha256=None) -> str:
    """The check a file placed by hand will still pass through, in words."""
    if md5:
        return f"its md5 must be {md5}"
    if sha256:
        return f"its sha256 must be {sha256}"
    if record_sha256 and Path(record_sha256).exists():
        return f"its sha256 must be {Path(record_sha256).read_text().strip()} (recorded in {record_sha256})"
    if record_sha256:
        return f"no checksum is published: its sha256 will be recorded in {record_sha256} and enforced from then on"
    return "no checksum is configured for it"


def verify(path: str | os.PathLike, *, md5: str | None = None, sha256: str | None = None,
           record_sha256: str | os.PathLike | None = None, source: str | None = None) -> None:
    """Check ``path`` against its md5 / sha256 before anything uses it; raise ArchiveError if it differs.

    ``sha256`` is a published value. Without one, ``record_sha256`` names the file that keeps
    the sha256 seen first (trust on first use): a later file must match it, and a file that is
    not an archive is never recorded. ``source`` names the file in messages (a URL for a download).
    """
    path, source = Path(path), source or str(path)

    def mismatch(kind: str, expected: str, actual: str, whence: str) -> ArchiveError:
        what = describe(path) or (None if _is_archive(path) else "damaged or incomplete (a download that stopped early?)")
        hint = f"; the file is {what}" if what else ""
        return ArchiveError(f"{kind} mismatch for {source}: expected {expected} ({whence}), got {actual}{hint}.")

    if md5 is not None:
        actual = calculate_md5(str(path))
        if actual != md5:
            raise mismatch("md5", md5, actual, "the config or the official value")
    if sha256 is not None or record_sha256 is not None:
        actual = sha256_of(path)
        recorded = Path(record_sha256).read_text().strip() if record_sha256 and Path(record_sha256).exists() else None
        expected = sha256 or recorded
        if expected is not None and actual != expected:
            raise mismatch("sha256", expected, actual,
                           "the config" if sha256 else f"the first download or placed archive, recorded in {record_sha256}")
        if record_sha256 and recorded is None:
            # Trust only a real archive: an error page served with status 200 must not be recorded.
            if not _is_archive(path):
                what = describe(path) or "damaged or incomplete (a download that stopped early?)"
                verb = "did not return" if source != str(path) else "is not"
                raise ArchiveError(f"{source} {verb} an archive ({what}); nothing was recorded")
            atomic_write_text(actual + "\n", record_sha256)


def _is_archive(path: Path) -> bool:
    """Whether ``path`` is a whole, readable .tar(.gz) or .zip: a truncated one is not (reading every
    member header runs through the whole compressed stream)."""
    if zipfile.is_zipfile(path):  # needs the central directory, which sits at the very end
        return True
    try:
        with tarfile.open(path) as tf:
            tf.getmembers()
        return True
    except _UNREADABLE:
        return False


def _download_failed(url: str, dest: Path, err: BaseException, note: str) -> ArchiveError:
    """The message for a download that did not arrive: the URL, the likely cause, the file to place by hand."""
    by_hand = f"place the file by hand at {dest} ({note}; it is checked before use)"
    if isinstance(err, urllib.error.HTTPError):
        return ArchiveError(
            f"downloading {url} failed: HTTP {err.code} {err.reason}. The URL may be wrong or the file moved: "
            f"check the data set's `url` in the config, or {by_hand}."
        )
    if isinstance(err, http.client.HTTPException):
        return ArchiveError(f"downloading {url} stopped early ({type(err).__name__}: {err}); nothing was kept. "
                            f"Run again, or {by_hand}.")
    reason = getattr(err, "reason", err)
    return ArchiveError(
        f"cannot download {url}: {reason}. This machine may have no internet access (the compute nodes of a "
        f"cluster often have none: there, run the download jobs on the login node, or download the file "
        f"elsewhere). To go on without a network, {by_hand}."
    )


def fetch(url: str, dest: str | os.PathLike, md5: str | None = None, sha256: str | None = None,
          record_sha256: str | os.PathLike | None = None) -> Path:
    """Download ``url`` to ``dest``, refusing (and deleting) a file whose checksum does not match.

    ``md5`` / ``sha256`` check against a published value. For an archive with no published
    checksum, ``record_sha256`` names a file that keeps the first download's sha256: later
    downloads must match it (trust on first use), so the data cannot change silently.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".download-") as tmp:
        try:
            download_url(url, root=tmp, filename=dest.name)
        except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException) as err:
            raise _download_failed(url, dest, err, checksum_note(md5, sha256, record_sha256)) from err
        except ValueError as err:  # urllib: "unknown url type"
            raise ArchiveError(f"cannot download {url!r}: {err}. Check the data set's `url` in the config "
                               "(http://, https:// or ftp://).") from err
        got = Path(tmp) / dest.name
        try:
            verify(got, md5=md5, sha256=sha256, record_sha256=record_sha256, source=url)
        except ArchiveError as err:
            raise ArchiveError(f"{err} The download was discarded; check the URL and the checksum in the config.") from None
        os.replace(got, dest)
    return dest


def verify_placed(path: str | os.PathLike, *, md5: str | None = None, sha256: str | None = None,
                  record_sha256: str | os.PathLike | None = None) -> None:
    """``verify`` for an archive about to be unpacked, downloaded or placed by hand: says what to do."""
    if not Path(path).is_file():
        raise ArchiveError(f"{path} does not exist: download it or place it there by hand "
                           f"({checksum_note(md5, sha256, record_sha256)})")
    try:
        verify(path, md5=md5, sha256=sha256, record_sha256=record_sha256)
    except ArchiveError as err:
        raise ArchiveError(f"{err} It was not used: replace {path} with the right file, or delete it so that "
                           "the pipeline downloads it again.") from None


def _check_member(name: str, target: Path) -> None:
    resolved = (target / name).resolve()
    if os.path.isabs(name) or not resolved.is_relative_to(target.resolve()):
        raise ArchiveError(f"refusing archive member {name!r}: it would land outside {target}")


def unreadable(archive: str | os.PathLike, err: BaseException) -> ArchiveError:
    """The message for an archive that cannot be read: not an archive at all, or a damaged one."""
    what = describe(archive)
    if what:
        return ArchiveError(
            f"{archive} is not an archive: it is {what}. Delete it and download it again, or check the URL it came "
            "from; a file placed by hand must be the archive itself."
        )
    return ArchiveError(
        f"{archive} is damaged or incomplete ({type(err).__name__}: {err}), most likely a download that stopped "
        "early. Delete it and run again to download it afresh, or place a complete copy there by hand."
    )


def safe_extract(archive: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Unpack a .tar(.gz) or .zip into ``target``; refuse links and path traversal."""
    archive, target = Path(archive), Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-extract-"))
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                for info in zf.infolist():
                    _check_member(info.filename, tmp)
                    mode = (info.external_attr >> 16) & 0o170000
                    if mode not in (0, 0o100000, 0o040000):  # only regular files and folders
                        raise ArchiveError(f"refusing archive member {info.filename!r}: not a regular file")
                zf.extractall(tmp)
        else:
            with tarfile.open(archive) as tf:
                members = tf.getmembers()
                for m in members:
                    _check_member(m.name, tmp)
                    if not (m.isfile() or m.isdir()):
                        raise ArchiveError(f"refusing archive member {m.name!r}: links and special files are not allowed")
                tf.extractall(tmp, members=members, filter="data")
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except _UNREADABLE as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise unreadable(archive, err) from err
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


@contextlib.contextmanager
def unpacked(archive: str | os.PathLike):
    """Safely unpack ``archive`` into a temporary folder beside it, removed afterwards: the
    prepared tensors are the only copy of the data the pipeline keeps besides the archive."""
    with tempfile.TemporaryDirectory(dir=Path(archive).parent, prefix=".unpacked-") as tmp:
        yield safe_extract(archive, Path(tmp) / "archive")
