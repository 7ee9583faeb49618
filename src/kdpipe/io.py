"""Atomic file writes: a reader (or a killed job) never sees half a file.

Every write goes to a hidden temp file beside its target, ``.<name>.tmp-<pid>``, then is renamed
over it. The pid makes the name unique per process; it also says whose a temp file is, so the
next writer of the same target removes the ones a killed job left behind. Nothing here follows a
link kdpipe did not make: whatever stands at the temp name (a symlink planted there, a killed job's
file of a reused pid) is unlinked and the temp file made afresh with O_EXCL|O_NOFOLLOW, and the
writers write through that descriptor, never reopening the name; the rename replaces a symlink at
the target itself instead of writing through it. A write that fails for
lack of space becomes one ``kdpipe:`` line (kdpipe.errors.DiskFullError) naming the file and the
space left; the temp file goes and the previous file stays as it was.
"""

import errno
import json
import os
import re
import shutil
import stat
from contextlib import contextmanager
from pathlib import Path

from kdpipe.errors import DiskFullError, InputError

# torch.save reports a failed write as a RuntimeError of its zip writer, not as an OSError.
_TORCH_WRITE_FAILED = ("unexpected pos", "PytorchStreamWriter failed writing file", "file write failed")
_NO_SPACE = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded"}


_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


def _tmp_beside(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def _create_temp(tmp: Path) -> int:
    """Make ``tmp`` afresh, an empty regular file of this process, and return a descriptor on it.

    Whatever stands at that name is unlinked first (unlink never follows a symlink); O_EXCL then
    refuses anything planted again in between, symlinks included, so the descriptor is always on
    a file this call created. The mode is 0666 less the umask, as open() would give."""
    for _ in range(5):
        try:
            if stat.S_ISDIR(os.lstat(tmp).st_mode):
                raise InputError(f"{tmp} is a directory where kdpipe writes its temp file: remove it and rerun")
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        try:
            return os.open(tmp, _CREATE, 0o666)
        except FileExistsError:  # planted again between the unlink and the open: go round
            continue
    raise InputError(f"{tmp} keeps reappearing while kdpipe makes its temp file there: someone else writes to "
                     f"{tmp.parent}; stop them and rerun")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    except (OverflowError, ValueError):  # no process can have that number
        return False
    return True


def remove_stale_temps(path: str | os.PathLike) -> list[Path]:
    """Remove the temp files of ``path`` left by processes that no longer run; returns them.

    Only regular files and symlinks named exactly ``.<name>.tmp-<pid>`` (a symlink is unlinked, never
    followed: its target stays as it is), and only when no process with that pid is alive on this
    machine: a live writer's file is left alone, and so is a directory.
    """
    path = Path(path)
    pattern = re.compile(rf"\.{re.escape(path.name)}\.tmp-([0-9]+)")
    removed = []
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return removed
    for entry in entries:
        m = pattern.fullmatch(entry.name)
        if not m or int(m.group(1)) == os.getpid() or int(m.group(1)) <= 0 or _pid_alive(int(m.group(1))):
            continue
        try:
            mode = os.lstat(entry.path).st_mode
            if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
                continue
            os.unlink(entry.path)
        except OSError:  # gone already, or not ours to remove: either way not this write's business
            continue
        removed.append(Path(entry.path))
    return removed


def _space_problem(err: BaseException) -> str | None:
    """Why ``err`` looks like a full disk (or quota), or None: follows the chain torch.save leaves."""
    chain = []
    while err is not None and err not in chain:
        chain.append(err)
        err = err.__cause__ or err.__context__
    for e in chain:
        if isinstance(e, OSError) and e.errno in _NO_SPACE:
            return _NO_SPACE[e.errno]
    for e in chain:
        if isinstance(e, RuntimeError) and any(s in str(e) for s in _TORCH_WRITE_FAILED):
            return f"the write failed ({str(e).splitlines()[0].strip()})"
    return None


def _free_space(directory: Path) -> str:
    try:
        free = float(shutil.disk_usage(directory).free)
    except OSError:
        return "unknown space"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if free < 1024 or unit == "TiB":
            return f"{free:.0f} B" if unit == "B" else f"{free:.1f} {unit}"
        free /= 1024


@contextmanager
def _replacing(path: str | os.PathLike):
    """Yield ``(tmp, fd)``: a descriptor on a fresh temp file beside ``path``, which the caller closes;
    on success the temp file replaces ``path``, on failure it goes.

    A write that fails for lack of space raises DiskFullError naming ``path`` and the space left.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    tmp = _tmp_beside(path)
    fd = _create_temp(tmp)  # before the try: a directory refused at that name is not ours to remove
    try:
        yield tmp, fd
        os.replace(tmp, path)  # a symlink at ``path`` is replaced, not written through
    except Exception as err:
        why = _space_problem(err)
        if why is None:
            raise
        tmp.unlink(missing_ok=True)  # before measuring: the space it took is free again
        kept = f"; the previous {path.name} is kept as it was" if path.exists() else ""
        raise DiskFullError(f"cannot write {path}: {why}; {_free_space(path.parent)} free on its filesystem: "
                            f"free some space and rerun{kept}") from err
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "wb"):
    """Yield an open file (``"wb"`` or ``"w"``, UTF-8) to write ``path``'s new content; on success it
    is flushed, fsync-ed and renamed over ``path``, on failure it goes. Write through this file, not
    by reopening a name: it is the file kdpipe created, whatever is put at the name meanwhile."""
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_file writes a new file: mode 'wb' or 'w', not {mode!r}")
    with _replacing(path) as (_tmp, fd):
        with open(fd, mode, encoding=None if "b" in mode else "utf-8") as fh:  # closes fd, whatever happens
            yield fh
            fh.flush()
            os.fsync(fh.fileno())


def atomic_save(obj, path: str | os.PathLike) -> None:
    """torch.save to a temporary file beside ``path``, fsync, then rename over it."""
    import torch  # here, not at the top: tables and figures use this module without torch

    with atomic_file(path, "wb") as fh:
        torch.save(obj, fh)


def atomic_write_text(text: str, path: str | os.PathLike) -> None:
    with atomic_file(path, "w") as fh:
        fh.write(text)


def _json_safe(obj):
    """NaN (an IoU of a class that never occurs, a std of one seed) becomes null: strict JSON."""
    if isinstance(obj, float) and obj != obj:
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def write_json(obj, path: str | os.PathLike) -> None:
    atomic_write_text(json.dumps(_json_safe(obj), indent=2, sort_keys=True, allow_nan=False) + "\n", path)


def read_json(path: str | os.PathLike):
    return json.loads(Path(path).read_text())
