"""Which device a training job runs on, and one GPU per concurrent job.

Snakemake's ``--resources gpu=N`` only caps how many GPU jobs run at once; it does not tell a
job which GPU is free (snakemake/snakemake#281). So each job claims one of the visible GPUs
with an exclusive ``flock`` on a per-GPU lock file, held for the job's whole life and released
by the kernel even when the job is killed. Under a scheduler that sets CUDA_VISIBLE_DEVICES
per job (SLURM), the scheduler already isolates jobs and no lock is taken.

``KDPIPE_JOBS_PER_GPU=3`` gives each GPU three slots, so up to three training jobs share one GPU
(small CIFAR models leave most of a modern GPU idle; benchmarks/gpu_throughput.py measures how
much sharing pays). A job claims a slot: lock file ``gpu-<id>.lock`` for slot 0 (the one-job-
per-GPU name of before) and ``gpu-<id>-slot<k>.lock`` for slot k >= 1. Slots are handed out
GPU by GPU (slot 0 of every GPU before any slot 1), so jobs spread over the GPUs first. Then
``snakemake --resources gpu=N`` counts slots: N = GPUs x jobs per GPU. Never more jobs on a GPU
than its slots, never one slot twice.

The lock directory is shared by whoever shares the GPUs, so it is treated as hostile ground
(``/tmp`` on a workstation): it must be a real directory, and sticky when it belongs to another
user or others may write it (the first user's job makes the default one mode 1777, like ``/tmp``,
so every user of the GPUs shares it; one named by ``KDPIPE_GPU_LOCK_DIR`` is made 0755 less the
umask, the user's own); lock files are opened without following symlinks, and a file that
kdpipe did not just create is only opened read-only and locked, never written, truncated or
chmod-ed. Lock files stay empty: who holds one is the kernel's record (``/proc/locks``), not a
pid written into a file that someone else may have planted.

MIG: CUDA shows a process only the first MIG slice that CUDA_VISIBLE_DEVICES lists. When it
lists MIG ids, a job claims one of them before CUDA starts and narrows CUDA_VISIBLE_DEVICES to
it, so several slices serve several jobs instead of all queuing on the first.

``KDPIPE_SIMULATED_GPUS="0,1"`` makes the claim logic run on a machine with no GPU: jobs
claim simulated ids and train on the CPU. Tests use it to check that concurrent jobs never
share a device (or a slot).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import re
import stat
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from kdpipe.errors import InputError

if TYPE_CHECKING:  # torch is imported where a device is chosen: the workflow imports this module to check settings
    import torch

SIMULATED_ENV = "KDPIPE_SIMULATED_GPUS"
LOCK_DIR_ENV = "KDPIPE_GPU_LOCK_DIR"
JOBS_PER_GPU_ENV = "KDPIPE_JOBS_PER_GPU"
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_PATH = getattr(os, "O_PATH", os.O_RDONLY)  # a handle on the directory that needs no read permission


class DeviceError(InputError):
    """A device setting, lock directory or lock file the user can fix; the message says how."""


@dataclass(frozen=True)
class Placement:
    device: torch.device  # where tensors go
    name: str  # what the report shows: "cpu", "cuda:1 (NVIDIA H100)", "cuda:1 (simulated)"
    gpu_id: str | None  # the claimed GPU id as the machine names it, if any
    slot: int | None = None  # which of the GPU's job slots (0-based), if one was claimed
    slots: int = 1  # how many jobs the GPU takes at once (KDPIPE_JOBS_PER_GPU)


def shared_lock_dir() -> Path:
    """The lock directory every user of the machine shares when none is named: under the system temp
    directory, per SLURM allocation when inside one (its GPU ids are its own), else one per machine."""
    job = os.environ.get("SLURM_JOB_ID")
    return Path(tempfile.gettempdir()) / (f"kdpipe-gpu-locks-slurm{job}" if job else "kdpipe-gpu-locks")


def default_lock_dir() -> Path:
    """``KDPIPE_GPU_LOCK_DIR`` when set, else the shared one."""
    if os.environ.get(LOCK_DIR_ENV):
        return Path(os.environ[LOCK_DIR_ENV])
    return shared_lock_dir()


def _ids(raw: str) -> list[str]:
    return [x.strip() for x in raw.split(",") if x.strip()]


def simulated_gpu_ids() -> list[str]:
    return _ids(os.environ.get(SIMULATED_ENV, ""))


def is_mig(gpu_id: str) -> bool:
    """A MIG slice as CUDA_VISIBLE_DEVICES names it: ``MIG-<uuid>`` or ``MIG-GPU-<uuid>/<gi>/<ci>``."""
    return gpu_id.startswith("MIG-")


def _narrow_to_one_mig(ids: list[str]) -> bool:
    """Claim among every listed MIG slice and then show CUDA only the claimed one: possible only
    while CUDA has not started (it reads CUDA_VISIBLE_DEVICES once)."""
    import torch

    return any(is_mig(i) for i in ids) and torch.backends.cuda.is_built() and not torch.cuda.is_initialized()


def visible_gpu_ids() -> list[str]:
    """GPU ids this process may use, as CUDA_VISIBLE_DEVICES names them when it is set."""
    import torch

    simulated = simulated_gpu_ids()
    if simulated:
        return simulated
    ids = _ids(os.environ.get("CUDA_VISIBLE_DEVICES", ""))
    if _narrow_to_one_mig(ids):
        return ids  # not torch.cuda.is_available(): it would start CUDA with every slice listed
    if not torch.cuda.is_available():
        return []
    count = torch.cuda.device_count()
    return ids[:count] if ids else [str(i) for i in range(count)]


def jobs_per_gpu() -> int:
    """How many training jobs one GPU takes at once (``KDPIPE_JOBS_PER_GPU``, default 1)."""
    raw = os.environ.get(JOBS_PER_GPU_ENV, "").strip()
    if not raw:
        return 1
    if not re.fullmatch(r"[0-9]+", raw) or int(raw) < 1:
        raise DeviceError(f"{JOBS_PER_GPU_ENV} must be a whole number >= 1 (jobs that share one GPU), got {raw!r}: "
                          f"set it to 1, 2, 3, ... or unset it")
    return int(raw)


def check_environment() -> None:
    """Refuse, before any job starts, a device setting that every training job would stop on."""
    jobs_per_gpu()


_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def lock_name(gpu_id: str, slot: int) -> str:
    """Slot 0 keeps the one-job-per-GPU lock's name, so mixed settings still never overbook slot 0.

    A plain id (``0``, ``GPU-<uuid>``) is used as it is. Anything else (a MIG id's ``/``, a leading
    dot) is replaced and a short hash of the id added, so two ids never share a file and every lock
    file stays directly in the lock directory."""
    name = gpu_id
    if _SAFE.search(gpu_id) or gpu_id.startswith(".") or len(gpu_id) > 100:
        digest = hashlib.sha256(gpu_id.encode()).hexdigest()[:8]
        name = f"{_SAFE.sub('_', gpu_id).lstrip('.')[:100]}-{digest}"
    return f"gpu-{name}.lock" if slot == 0 else f"gpu-{name}-slot{slot}.lock"


def _user(uid: int) -> str:
    try:
        import pwd

        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except (ImportError, KeyError):
        return f"uid {uid}"


def _refuse_dir(path: Path, problem: str) -> DeviceError:
    return DeviceError(f"GPU lock directory {path} {problem}; set {LOCK_DIR_ENV} to a directory of your own "
                       f"(every job that shares these GPUs must use the same one), or remove {path}")


def _check_dir(path: Path, st: os.stat_result) -> None:
    """The directory kdpipe trusts with its lock files: a real directory, sticky if it is another
    user's or anyone else may write to it (so nobody can replace another user's lock file).

    Another user's sticky directory is accepted: that is how users of one workstation share its
    GPUs. Its owner can delete lock files (a slot overbooked, at worst) but cannot make kdpipe
    write anywhere: lock files are never followed, written or chmod-ed unless kdpipe made them."""
    if not stat.S_ISDIR(st.st_mode):
        raise _refuse_dir(path, "is not a directory")
    if st.st_uid not in (os.geteuid(), 0) and not st.st_mode & stat.S_ISVTX:
        raise _refuse_dir(path, f"belongs to {_user(st.st_uid)} and is not sticky (mode {stat.S_IMODE(st.st_mode):o}), "
                                "so its lock files cannot be trusted (a GPU lock directory shared by several users "
                                "has mode 1777, like /tmp)")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not st.st_mode & stat.S_ISVTX:
        raise _refuse_dir(path, "is writable by other users without the sticky bit (mode "
                                f"{stat.S_IMODE(st.st_mode):o}; chmod +t would fix it)")


def _make_dir(path: Path) -> bool:
    """Create the lock directory if it is missing; True if this call made it."""
    # The shared default is every GPU user's, like /tmp: 1777, sticky so nobody replaces another's
    # lock file. A directory the user named (KDPIPE_GPU_LOCK_DIR, a lock_dir argument) may be a new
    # folder in their home: never opened to planted files. 0755 less the umask, not 0700, so users
    # who share it deliberately can still open and lock the lock files its owner made (read-only
    # opens); to let them add lock files too, its owner makes it 1777 by hand.
    shared = path == shared_lock_dir()
    mode = 0o1777 if shared else 0o755
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.mkdir(path, mode)
    except FileExistsError:
        return False
    except OSError as err:
        raise _refuse_dir(path, f"cannot be created ({err.strerror})") from None
    # mkdir's mode lost the bits the umask hides. Set them on what we made, through a handle
    # that cannot be a symlink, and only if it is still ours (the parent may be writable by others).
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | _O_CLOEXEC)
    except OSError as err:  # replaced by a symlink or something else since our mkdir
        raise _refuse_dir(path, f"changed while it was being created ({err.strerror})") from None
    try:
        st = os.fstat(fd)
        if shared and st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) != mode:
            os.fchmod(fd, mode)
    finally:
        os.close(fd)
    return True


def open_lock_dir(path: Path) -> int:
    """A handle on the checked lock directory (creating it if missing); lock files are opened relative
    to it, so a directory swapped after the check is never used."""
    _make_dir(path)
    try:
        st = os.lstat(path)
    except OSError as err:
        raise _refuse_dir(path, f"cannot be read ({err.strerror})") from None
    if stat.S_ISLNK(st.st_mode):
        raise _refuse_dir(path, "is a symbolic link, not a directory")
    _check_dir(path, st)
    try:
        fd = os.open(path, _O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | _O_CLOEXEC)
    except OSError as err:
        raise _refuse_dir(path, f"cannot be opened ({err.strerror})") from None
    try:
        st = os.fstat(fd)
        _check_dir(path, st)
        if not os.access(path, os.X_OK):
            raise _refuse_dir(path, "is not searchable by you (permission denied)")
    except BaseException:
        os.close(fd)
        raise
    return fd


def _open_lock(dir_fd: int, lock_dir: Path, name: str) -> int | str:
    """An open lock file, or why this one cannot be used ("is a symbolic link").

    Nothing is ever written to a lock file, and only one this call created is chmod-ed."""
    for _ in range(5):  # a file removed between the two opens below: try again
        try:
            fd = os.open(name, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | _O_CLOEXEC, 0o644, dir_fd=dir_fd)
        except FileExistsError:
            pass
        except PermissionError:
            try:
                os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                raise _refuse_dir(lock_dir, "does not let you create lock files in it (permission denied)") from None
            except OSError:
                pass
        except OSError as err:  # a read-only or full file system, ...
            raise _refuse_dir(lock_dir, f"cannot hold a new lock file {name} ({err.strerror})") from None
        else:
            os.fchmod(fd, 0o644)  # ours, just made: other users open it to lock it too, whatever our umask
            return fd
        # It exists: open it without O_CREAT (which a sticky directory refuses on another user's file
        # under fs.protected_regular), read-only and non-blocking (a planted FIFO must not hang us).
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | _O_CLOEXEC, dir_fd=dir_fd)
        except FileNotFoundError:
            continue
        except OSError as err:
            return "is a symbolic link" if err.errno == errno.ELOOP else f"cannot be opened ({err.strerror})"
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode) and st.st_nlink == 1:
            return fd
        os.close(fd)
        return "is not a plain file" if not stat.S_ISREG(st.st_mode) else "is a hard link to another file"
    return "keeps disappearing"


@contextmanager
def claim_gpu(ids: list[str], lock_dir: str | os.PathLike | None = None, poll_s: float = 0.2):
    """Hold an exclusive lock on one of ``ids``; yield ``(index_in_ids, id)``. Waits when all are taken."""
    with claim_slot(ids, 1, lock_dir, poll_s) as (index, gpu_id, _slot):
        yield index, gpu_id


@contextmanager
def claim_slot(ids: list[str], slots: int = 1, lock_dir: str | os.PathLike | None = None, poll_s: float = 0.2):
    """Hold an exclusive lock on one of the ``slots`` slots of one of ``ids``; yield
    ``(index_in_ids, id, slot)``. Slot 0 of every GPU comes before any slot 1. Waits when all are taken.

    A lock file that cannot be used (planted by someone else: a symlink, not a plain file, not
    openable) is skipped with a warning, since whoever made it may be using that slot; when no
    slot is usable the claim stops with a DeviceError instead of waiting forever."""
    if not ids:
        raise ValueError("no GPU ids to claim from")
    if slots < 1:
        raise ValueError(f"a GPU needs at least one slot, got {slots}")
    lock_dir = Path(lock_dir or default_lock_dir())
    dir_fd = open_lock_dir(lock_dir)
    try:
        waited, unusable = False, {}
        while True:
            for slot, (index, gpu_id) in ((s, g) for s in range(slots) for g in enumerate(ids)):
                name = lock_name(gpu_id, slot)
                fd = _open_lock(dir_fd, lock_dir, name)
                if isinstance(fd, str):
                    if name not in unusable:
                        print(f"kdpipe: skipping GPU {gpu_id} slot {slot}: lock file {lock_dir / name} {fd}: "
                              "kdpipe's lock files are plain files any user may open; remove it to use that slot",
                              file=sys.stderr)
                    unusable[name] = fd
                    continue
                unusable.pop(name, None)
                try:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        continue
                    except OSError as err:  # e.g. a network file system without flock
                        raise _refuse_dir(lock_dir, f"cannot lock {name} ({err.strerror})") from None
                    os.close(dir_fd)
                    dir_fd = -1
                    yield index, gpu_id, slot
                    return
                finally:
                    os.close(fd)  # closing the last handle releases the lock
            if len(unusable) == slots * len(ids):
                listed = "; ".join(f"{n} {why}" for n, why in unusable.items())
                raise DeviceError(f"no usable GPU lock file in {lock_dir} ({listed}): remove those files, or set "
                                  f"{LOCK_DIR_ENV} to a directory of your own")
            if not waited:
                print(f"kdpipe: all GPUs {ids} ({slots} job slot(s) each) are busy; waiting for one to free up",
                      file=sys.stderr)
                waited = True
            time.sleep(poll_s)
    finally:
        if dir_fd >= 0:
            os.close(dir_fd)


def _scheduler_isolated(ids: list[str]) -> bool:
    """A scheduler gave this job exactly one GPU of its own: nothing to share, nothing to lock."""
    return "SLURM_JOB_ID" in os.environ and "CUDA_VISIBLE_DEVICES" in os.environ and len(ids) == 1


@contextmanager
def placement(requested: str = "auto", lock_dir: str | os.PathLike | None = None):
    """Yield the Placement for a job asking for ``auto``, ``cpu`` or ``cuda``."""
    import torch

    if requested not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {requested!r}")
    ids = visible_gpu_ids() if requested != "cpu" else []
    if requested == "cuda" and not ids:
        raise DeviceError("the config asks for device: cuda, but no CUDA device is visible to this job: "
                          "set device: auto (or cpu), or run it where a GPU is")
    if not ids:
        yield Placement(torch.device("cpu"), "cpu", None)
        return
    simulated = bool(simulated_gpu_ids())
    if _scheduler_isolated(ids) and not simulated:
        # The scheduler gave this job its GPU: one job per allocated GPU, whatever KDPIPE_JOBS_PER_GPU says.
        torch.cuda.set_device(0)
        yield Placement(torch.device("cuda", 0), f"cuda:{ids[0]} ({torch.cuda.get_device_name(0)})", ids[0])
        return
    slots = jobs_per_gpu()
    narrow = not simulated and _narrow_to_one_mig(ids)
    with claim_slot(ids, slots, lock_dir) as (index, gpu_id, slot):
        if simulated:
            yield Placement(torch.device("cpu"), f"cuda:{gpu_id} (simulated)", gpu_id, slot, slots)
            return
        if narrow:
            # CUDA has not started yet: it will see just the claimed slice, as device 0.
            os.environ["CUDA_VISIBLE_DEVICES"] = gpu_id
            index = 0
            if not torch.cuda.is_available():
                raise DeviceError(f"CUDA_VISIBLE_DEVICES lists MIG slice {gpu_id}, but CUDA finds no device there: "
                                  "check the id with `nvidia-smi -L`")
        torch.cuda.set_device(index)
        yield Placement(torch.device("cuda", index), f"cuda:{gpu_id} ({torch.cuda.get_device_name(index)})",
                        gpu_id, slot, slots)
