"""Fetching and unpacking raw archives without trusting them.

A download lands in a temporary folder beside its destination and is moved into place only
after its checksum matched, so a failed or tampered download leaves nothing behind. Extraction
refuses links, device files and any member whose path would leave the target folder, and
unpacks into a temporary folder that is renamed into place only when every member is in.
"""

import contextlib
import hashlib
import os
import shutil
import tarfile
import tempfile
import zipfile
from pathlib import Path

from torchvision.datasets.utils import calculate_md5, download_url


class ArchiveError(RuntimeError):
    """A raw archive failed verification or is unsafe to unpack."""


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


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
        download_url(url, root=tmp, filename=dest.name)
        got = Path(tmp) / dest.name
        if md5 is not None:
            actual = calculate_md5(str(got))
            if actual != md5:
                raise ArchiveError(
                    f"md5 mismatch for {url}: expected {md5}, got {actual}. "
                    "The download was discarded; check the URL or the md5 in the config."
                )
        if sha256 is not None or record_sha256 is not None:
            actual = sha256_of(got)
            recorded = Path(record_sha256).read_text().strip() if record_sha256 and Path(record_sha256).exists() else None
            expected = sha256 or recorded
            if expected is not None and actual != expected:
                source = "the config" if sha256 else f"the first download, recorded in {record_sha256}"
                raise ArchiveError(
                    f"sha256 mismatch for {url}: expected {expected} ({source}), got {actual}. "
                    "The download was discarded."
                )
            if record_sha256 and recorded is None:
                # Trust only a real archive: an error page served with status 200 must not be recorded.
                if not (tarfile.is_tarfile(got) or zipfile.is_zipfile(got)):
                    raise ArchiveError(f"{url} did not return an archive; nothing was recorded or kept")
                Path(record_sha256).write_text(actual + "\n")
        os.replace(got, dest)
    return dest


def _check_member(name: str, target: Path) -> None:
    resolved = (target / name).resolve()
    if os.path.isabs(name) or not resolved.is_relative_to(target.resolve()):
        raise ArchiveError(f"refusing archive member {name!r}: it would land outside {target}")


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
