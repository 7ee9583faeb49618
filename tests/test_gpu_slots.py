"""Several jobs per GPU (KDPIPE_JOBS_PER_GPU): never more jobs on a GPU than its slots, never one
slot twice; threads and real processes, on simulated GPUs."""

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from itertools import combinations

import pytest

from kdpipe import devices
from test_multi_gpu import most_at_once
from kdpipe.devices import JOBS_PER_GPU_ENV, SIMULATED_ENV, claim_slot, jobs_per_gpu, lock_name, placement


def check(holds: list[dict], gpus: list[str], slots: int) -> None:
    assert most_at_once([h["span"] for h in holds]) == len(gpus) * slots, "all slots should have been busy at once"
    for g in gpus:
        assert most_at_once([h["span"] for h in holds if h["gpu"] == g]) <= slots, g
    for a, b in combinations(holds, 2):
        overlap = min(a["span"][1], b["span"][1]) > max(a["span"][0], b["span"][0])
        assert not (overlap and (a["gpu"], a["slot"]) == (b["gpu"], b["slot"])), (a, b)
    assert {h["slot"] for h in holds} == set(range(slots))


def test_jobs_per_gpu_setting(monkeypatch):
    monkeypatch.delenv(JOBS_PER_GPU_ENV, raising=False)
    assert jobs_per_gpu() == 1
    monkeypatch.setenv(JOBS_PER_GPU_ENV, "3")
    assert jobs_per_gpu() == 3
    for bad in ("0", "-1", "two", "1.5"):
        monkeypatch.setenv(JOBS_PER_GPU_ENV, bad)
        with pytest.raises(devices.DeviceError, match=JOBS_PER_GPU_ENV):
            jobs_per_gpu()
    assert lock_name("0", 0) == "gpu-0.lock" and lock_name("3", 2) == "gpu-3-slot2.lock"


def test_slots_fill_gpu_by_gpu(tmp_path):
    with claim_slot(["0", "1"], 2, tmp_path) as a, claim_slot(["0", "1"], 2, tmp_path) as b:
        with claim_slot(["0", "1"], 2, tmp_path) as c:
            assert [a, b, c] == [(0, "0", 0), (1, "1", 0), (0, "0", 1)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpu-0-slot1.lock", "gpu-0.lock", "gpu-1.lock"]


def test_threads_never_overbook(tmp_path):
    gpus, slots, workers = ["0", "1"], 3, 12
    holds, lock = [], threading.Lock()
    barrier = threading.Barrier(workers)

    def work():
        barrier.wait()
        with claim_slot(gpus, slots, tmp_path, poll_s=0.01) as (_, gpu, slot):
            start = time.monotonic()
            time.sleep(0.15)
            end = time.monotonic()
        with lock:
            holds.append({"gpu": gpu, "slot": slot, "span": (start, end)})

    threads = [threading.Thread(target=work) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(holds) == workers
    check(holds, gpus, slots)


WORKER = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from kdpipe.devices import placement
    go, out = Path(sys.argv[1]), Path(sys.argv[2])
    while not go.exists():
        time.sleep(0.01)
    with placement("cuda", lock_dir=sys.argv[3]) as p:
        start = time.time()
        time.sleep(0.6)
        end = time.time()
    out.write_text(json.dumps({"gpu": p.gpu_id, "slot": p.slot, "slots": p.slots, "name": p.name,
                               "span": [start, end]}))
    """
)


def test_processes_never_overbook_a_simulated_gpu(tmp_path):
    """Five `placement("cuda")` processes, one simulated GPU with two slots: at most two at once."""
    env = {**os.environ, SIMULATED_ENV: "7", JOBS_PER_GPU_ENV: "2"}
    env.pop("SLURM_JOB_ID", None)
    go, locks = tmp_path / "go", tmp_path / "locks"
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(go), str(tmp_path / f"r{i}.json"), str(locks)],
                              env=env) for i in range(5)]
    time.sleep(3)  # let them import torch before the start signal (2 shared cores)
    go.touch()
    for p in procs:
        assert p.wait(timeout=120) == 0
    holds = [json.loads((tmp_path / f"r{i}.json").read_text()) for i in range(5)]
    assert all(h["name"] == "cuda:7 (simulated)" and h["slots"] == 2 for h in holds)
    check(holds, ["7"], 2)


def test_placement_without_slots_is_unchanged(monkeypatch, tmp_path):
    monkeypatch.setenv(SIMULATED_ENV, "0")
    monkeypatch.delenv(JOBS_PER_GPU_ENV, raising=False)
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    with placement("auto", lock_dir=tmp_path) as p:
        assert (p.name, p.slot, p.slots) == ("cuda:0 (simulated)", 0, 1)
    assert [f.name for f in tmp_path.iterdir()] == ["gpu-0.lock"]
    assert devices.JOBS_PER_GPU_ENV == "KDPIPE_JOBS_PER_GPU"


# MIG slices as CUDA_VISIBLE_DEVICES lists them (the driver's older form, with slashes).
MIG = ["MIG-GPU-aaa/1/0", "MIG-GPU-aaa/2/0"]


def test_lock_names_of_unusual_ids_are_flat_and_distinct():
    # A lock file's name is shared by every kdpipe version that locks the same GPU: plain ids keep theirs.
    assert lock_name("0", 0) == "gpu-0.lock"
    assert lock_name("GPU-8a1c-42", 1) == "gpu-GPU-8a1c-42-slot1.lock"
    assert lock_name("MIG-5c1e-77", 0) == "gpu-MIG-5c1e-77.lock"  # the newer MIG form needs no change
    # "/" and other characters become "_", plus the first 8 hex digits of the id's sha256 (`sha256sum`)
    assert lock_name(MIG[0], 0) == "gpu-MIG-GPU-aaa_1_0-2b66d630.lock"
    assert lock_name(MIG[1], 2) == "gpu-MIG-GPU-aaa_2_0-3508c06d-slot2.lock"
    assert lock_name("a/b", 0) != lock_name("a:b", 0)
    assert not lock_name("..", 0).startswith("gpu-..") and "/" not in lock_name("../../etc/x", 0)


def test_two_jobs_on_two_simulated_mig_slices_get_one_each(monkeypatch, tmp_path):
    """CUDA would show each job only the first listed slice: the claim is among all of them."""
    monkeypatch.setenv(SIMULATED_ENV, ",".join(MIG))
    monkeypatch.delenv(JOBS_PER_GPU_ENV, raising=False)
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    both_hold = threading.Barrier(2, timeout=20)  # broken (an error) unless both hold a slice at once
    got = []

    def job():
        with placement("cuda", lock_dir=tmp_path) as p:
            both_hold.wait()
            got.append(p.gpu_id)

    threads = [threading.Thread(target=job) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(got) == MIG
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpu-MIG-GPU-aaa_1_0-2b66d630.lock",
                                                          "gpu-MIG-GPU-aaa_2_0-3508c06d.lock"]
    assert all(p.is_file() for p in tmp_path.iterdir())  # in the lock directory, not in folders below it


@pytest.mark.parametrize("bad", ["abc", "0", "-1", "1.5", "+2", "2 slots"])
def test_a_bad_jobs_per_gpu_is_refused_before_any_job(monkeypatch, bad):
    monkeypatch.setenv(JOBS_PER_GPU_ENV, bad)
    with pytest.raises(devices.DeviceError) as caught:
        devices.check_environment()
    assert str(caught.value) == (f"KDPIPE_JOBS_PER_GPU must be a whole number >= 1 (jobs that share one GPU), "
                                 f"got {bad!r}: set it to 1, 2, 3, ... or unset it")


def test_a_good_jobs_per_gpu_passes(monkeypatch):
    for good, n in (("", 1), ("1", 1), (" 3 ", 3)):
        monkeypatch.setenv(JOBS_PER_GPU_ENV, good)
        devices.check_environment()
        assert jobs_per_gpu() == n


def test_the_job_stops_on_one_line_for_a_bad_jobs_per_gpu(monkeypatch, tmp_path, capsys):
    from kdpipe import cli
    from test_lock_security import _alone_run

    monkeypatch.setenv(SIMULATED_ENV, "0")
    monkeypatch.setenv(JOBS_PER_GPU_ENV, "abc")
    monkeypatch.setenv(devices.LOCK_DIR_ENV, str(tmp_path / "locks"))
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    assert cli.main(_alone_run(tmp_path)) == 1
    assert capsys.readouterr().err == ("kdpipe: KDPIPE_JOBS_PER_GPU must be a whole number >= 1 (jobs that share "
                                       "one GPU), got 'abc': set it to 1, 2, 3, ... or unset it\n")


def test_snakemake_refuses_a_bad_jobs_per_gpu_when_the_workflow_loads(tmp_path):
    from workflow_copy import copy_workflow, snakemake

    workdir = copy_workflow(tmp_path / "w")
    proc = snakemake(workdir, "-n", "results/report.pdf", "--cores", "1", "--configfile", "presets/demo.yaml",
                     "presets/tiny.yaml", env={JOBS_PER_GPU_ENV: "1.5"}, check=False, timeout=120)
    assert proc.returncode != 0
    assert ("Error in the environment: KDPIPE_JOBS_PER_GPU must be a whole number >= 1 (jobs that share one GPU), "
            "got '1.5'") in proc.stdout, proc.stdout[-3000:]
    assert "Traceback" not in proc.stdout and "Job stats" not in proc.stdout  # refused before planning any job


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_only_the_shared_default_lock_directory_is_made_1777(tmp_path, monkeypatch, umask):
    """The default, under the system temp directory, is every GPU user's (1777, like /tmp, whatever
    the umask); a directory named by KDPIPE_GPU_LOCK_DIR (a new folder in one's home) stays the
    user's own: 0755 less the umask, never open to files planted by others."""
    import stat
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "systmp"))  # where gettempdir() points
    (tmp_path / "systmp").mkdir()
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.delenv(devices.LOCK_DIR_ENV, raising=False)
    old = os.umask(umask)
    try:
        with claim_slot(["0"], 1):
            pass
        named = tmp_path / "home" / "me" / "gpu-locks"
        monkeypatch.setenv(devices.LOCK_DIR_ENV, str(named))
        with claim_slot(["0"], 1):
            pass
    finally:
        os.umask(old)
    shared = tmp_path / "systmp" / "kdpipe-gpu-locks"
    assert stat.S_IMODE(os.stat(shared).st_mode) == 0o1777
    assert stat.S_IMODE(os.stat(named).st_mode) == 0o755 & ~umask
    assert os.listdir(shared) == ["gpu-0.lock"] and os.listdir(named) == ["gpu-0.lock"]
