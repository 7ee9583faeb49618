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

``KDPIPE_SIMULATED_GPUS="0,1"`` makes the claim logic run on a machine with no GPU: jobs
claim simulated ids and train on the CPU. Tests use it to check that concurrent jobs never
share a device (or a slot).
"""

import fcntl
import os
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

SIMULATED_ENV = "KDPIPE_SIMULATED_GPUS"
LOCK_DIR_ENV = "KDPIPE_GPU_LOCK_DIR"
JOBS_PER_GPU_ENV = "KDPIPE_JOBS_PER_GPU"


@dataclass(frozen=True)
class Placement:
    device: torch.device  # where tensors go
    name: str  # what the report shows: "cpu", "cuda:1 (NVIDIA H100)", "cuda:1 (simulated)"
    gpu_id: str | None  # the claimed GPU id as the machine names it, if any
    slot: int | None = None  # which of the GPU's job slots (0-based), if one was claimed
    slots: int = 1  # how many jobs the GPU takes at once (KDPIPE_JOBS_PER_GPU)


def default_lock_dir() -> Path:
    """Per SLURM allocation when inside one (its GPU ids are its own), else one per machine."""
    if os.environ.get(LOCK_DIR_ENV):
        return Path(os.environ[LOCK_DIR_ENV])
    job = os.environ.get("SLURM_JOB_ID")
    return Path(tempfile.gettempdir()) / (f"kdpipe-gpu-locks-slurm{job}" if job else "kdpipe-gpu-locks")


def simulated_gpu_ids() -> list[str]:
    raw = os.environ.get(SIMULATED_ENV, "").strip()
    return [x.strip() for x in raw.split(",") if x.strip()]


def visible_gpu_ids() -> list[str]:
    """GPU ids this process may use, as CUDA_VISIBLE_DEVICES names them when it is set."""
    simulated = simulated_gpu_ids()
    if simulated:
        return simulated
    if not torch.cuda.is_available():
        return []
    raw = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
    ids = [x.strip() for x in raw.split(",") if x.strip()] if raw else []
    count = torch.cuda.device_count()
    return ids[:count] if ids else [str(i) for i in range(count)]


def jobs_per_gpu() -> int:
    """How many training jobs one GPU takes at once (``KDPIPE_JOBS_PER_GPU``, default 1)."""
    raw = os.environ.get(JOBS_PER_GPU_ENV, "").strip()
    if not raw:
        return 1
    try:
        n = int(raw)
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(f"{JOBS_PER_GPU_ENV} must be a whole number >= 1, got {raw!r}")
    return n


def lock_name(gpu_id: str, slot: int) -> str:
    """Slot 0 keeps the one-job-per-GPU lock's name, so mixed settings still never overbook slot 0."""
    return f"gpu-{gpu_id}.lock" if slot == 0 else f"gpu-{gpu_id}-slot{slot}.lock"


@contextmanager
def claim_gpu(ids: list[str], lock_dir: str | os.PathLike | None = None, poll_s: float = 0.2):
    """Hold an exclusive lock on one of ``ids``; yield ``(index_in_ids, id)``. Waits when all are taken."""
    with claim_slot(ids, 1, lock_dir, poll_s) as (index, gpu_id, _slot):
        yield index, gpu_id


@contextmanager
def claim_slot(ids: list[str], slots: int = 1, lock_dir: str | os.PathLike | None = None, poll_s: float = 0.2):
    """Hold an exclusive lock on one of the ``slots`` slots of one of ``ids``; yield
    ``(index_in_ids, id, slot)``. Slot 0 of every GPU comes before any slot 1. Waits when all are taken."""
    if not ids:
        raise ValueError("no GPU ids to claim from")
    if slots < 1:
        raise ValueError(f"a GPU needs at least one slot, got {slots}")
    lock_dir = Path(lock_dir or default_lock_dir())
    if not lock_dir.exists():
        lock_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(lock_dir, 0o1777)  # shared by every user of the workstation, like /tmp
    waited = False
    while True:
        for slot, (index, gpu_id) in ((s, g) for s in range(slots) for g in enumerate(ids)):
            fd = os.open(lock_dir / lock_name(gpu_id, slot), os.O_RDWR | os.O_CREAT, 0o666)
            try:
                os.fchmod(fd, 0o666)  # other users must be able to lock it too (the umask hides w)
            except PermissionError:
                pass  # someone else's file: they made it shareable
            fh = os.fdopen(fd, "r+")
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.close()
                continue
            try:
                fh.seek(0)
                fh.truncate()
                fh.write(f"{os.getpid()}\n")
                fh.flush()
                yield index, gpu_id, slot
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
                fh.close()
            return
        if not waited:
            print(f"kdpipe: all GPUs {ids} ({slots} job slot(s) each) are busy; waiting for one to free up",
                  file=sys.stderr)
            waited = True
        time.sleep(poll_s)


def _scheduler_isolated(ids: list[str]) -> bool:
    """A scheduler gave this job exactly one GPU of its own: nothing to share, nothing to lock."""
    return "SLURM_JOB_ID" in os.environ and "CUDA_VISIBLE_DEVICES" in os.environ and len(ids) == 1


@contextmanager
def placement(requested: str = "auto", lock_dir: str | os.PathLike | None = None):
    """Yield the Placement for a job asking for ``auto``, ``cpu`` or ``cuda``."""
    if requested not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {requested!r}")
    ids = visible_gpu_ids() if requested != "cpu" else []
    if requested == "cuda" and not ids:
        raise RuntimeError("config asks for device: cuda, but no CUDA device is visible to this job")
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
    with claim_slot(ids, slots, lock_dir) as (index, gpu_id, slot):
        if simulated:
            yield Placement(torch.device("cpu"), f"cuda:{gpu_id} (simulated)", gpu_id, slot, slots)
        else:
            torch.cuda.set_device(index)
            yield Placement(torch.device("cuda", index), f"cuda:{gpu_id} ({torch.cuda.get_device_name(index)})",
                            gpu_id, slot, slots)
