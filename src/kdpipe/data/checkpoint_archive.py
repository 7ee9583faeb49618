"""One published checkpoint read out of an archive of them, without trusting either.

The archive (mdistiller's ``cifar_teachers.tar``: ``cifar_teachers/<arch>_vanilla/ckpt_epoch_240.pth``,
large) is never extracted: the one member is opened by its exact name and read into memory.
A name with ``..`` or a leading ``/``, and a member that is a link or a special file, are refused;
the bytes are loaded with ``torch.load(weights_only=True)`` on the CPU, so a pickle that would run
code is refused by torch and nothing in it runs.
"""

import hashlib
import io
import pickle
import tarfile
from pathlib import Path, PurePosixPath

from kdpipe.data.archive import _UNREADABLE, unreadable
from kdpipe.errors import ArchiveError, CheckpointError

# A CIFAR teacher's checkpoint is 1-100 MB (ResNet50 with its optimizer state); a member past this
# is not one, and reading it into memory could exhaust the job's.
MAX_MEMBER_BYTES = 2 << 30


def check_member_name(member: str) -> None:
    """Refuse a member path that names anything but a file inside the archive's own tree."""
    path = PurePosixPath(member)
    if not member or member.startswith("/") or "\\" in member or ".." in path.parts:
        raise ArchiveError(f"refusing archive member {member!r}: a member path is relative, without '..' "
                           "(check the teacher source's `member` in the config)")


def read_member(archive: str | Path, member: str) -> bytes:
    """The bytes of ``member`` (exact name) of the tar ``archive``; nothing is written to disk."""
    check_member_name(member)
    try:
        with tarfile.open(archive) as tf:
            try:
                info = tf.getmember(member)
            except KeyError:
                pattern = [m.name for m in tf.getmembers() if m.isfile()][:3]
                raise ArchiveError(f"{archive} has no member {member} (its first files: {', '.join(pattern) or 'none'}); "
                                   "check the teacher source's `member` and `archs` in the config, or whether the "
                                   "archive is the right one") from None
            if not info.isfile():
                raise ArchiveError(f"refusing archive member {member!r} of {archive}: links and special files are "
                                   "not read; the archive is not the published one")
            if info.size > MAX_MEMBER_BYTES:
                raise ArchiveError(f"refusing archive member {member!r} of {archive}: {info.size:,} bytes is not a "
                                   "teacher checkpoint")
            data = tf.extractfile(info).read()
    except _UNREADABLE as err:
        raise unreadable(archive, err) from err
    if len(data) != info.size:  # a member cut short by a truncated archive
        raise unreadable(archive, EOFError(f"{member} holds {len(data)} of its {info.size} bytes"))
    return data


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def load_checkpoint(data: bytes, where: str) -> dict:
    """A RepDistiller-style checkpoint ``{"model": state_dict, "epoch", "accuracy", ...}`` from its
    bytes, loaded with weights_only on the CPU (a tensor saved on a GPU comes back on the CPU)."""
    import torch

    try:
        ckpt = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, TypeError, AttributeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{where}: torch refused to load it with weights_only=True ({type(err).__name__}: "
                              f"{first[:300]}); nothing in it was run. It is not a published checkpoint: check "
                              "the archive and the teacher source in the config") from err
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict):
        keys = ", ".join(map(str, list(ckpt)[:5])) if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"{where}: expected a dict whose 'model' entry is a state_dict (as RepDistiller and "
                              f"mdistiller save), found {keys or 'an empty dict'}")
    return ckpt


def scalar(value) -> float | int | None:
    """A checkpoint's ``epoch`` / ``accuracy`` as a plain number (it may be a one-element tensor)."""
    if hasattr(value, "numel"):
        return value.item() if value.numel() == 1 else None
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None
