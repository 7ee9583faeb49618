"""GPU placement: one simulated GPU per concurrent process, lock release on kill, device choices."""

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch

from kdpipe import devices
from kdpipe.devices import SIMULATED_ENV, claim_gpu, placement, visible_gpu_ids

# A worker runs rounds; in each it signals readiness, waits for that round's "go", sets the
# simulated GPU ids, claims one with placement("cuda"), holds it and records the interval: for
# `hold` seconds, or with `together` until every worker holds one (four GPUs for four workers:
# a worker slowed down by a busy machine must not find a GPU already given back).
# One set of processes serves every round, so torch is imported once per process.
WORKER = textwrap.dedent(
    """
    import json, os, sys, time
    from pathlib import Path
    from kdpipe.devices import placement
    work, name, rounds = Path(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
    for r, spec in enumerate(rounds):
        (work / f"ready-{r}-{name}").touch()
        while not (work / f"go-{r}").exists():
            time.sleep(0.01)
        os.environ["KDPIPE_SIMULATED_GPUS"] = spec["simulated"]
        with placement("cuda", lock_dir=spec["lock_dir"]) as p:
            start = time.time()
            (work / f"held-{r}-{name}").touch()
            if spec.get("together"):  # hold until every worker holds one (at most a minute), however slow the machine
                while len(list(work.glob(f"held-{r}-*"))) < spec["workers"] and time.time() < start + 60:
                    time.sleep(0.01)
            else:
                time.sleep(spec["hold"])
            end = time.time()
        (work / f"result-{r}-{name}.json").write_text(json.dumps(
            {"gpu_id": p.gpu_id, "name": p.name, "device": str(p.device), "start": start, "end": end}))
    """
)

HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from kdpipe.devices import claim_gpu
    with claim_gpu(["0"], lock_dir=sys.argv[1]) as claimed:
        Path(sys.argv[2]).write_text(claimed[1])
        time.sleep(120)
    """
)


def _env(simulated: str | None) -> dict:
    env = dict(os.environ)
    env.pop("SLURM_JOB_ID", None)
    if simulated is None:
        env.pop(SIMULATED_ENV, None)
    else:
        env[SIMULATED_ENV] = simulated
    return env


def _wait_for(predicate, timeout: float, what: str):
    deadline = time.time() + timeout
    while not predicate():
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


COUNT = 4
ROUNDS = {"four_ids": {"simulated": "0,1,2,3", "together": True}, "two_ids": {"simulated": "0,1", "hold": 0.6}}


@pytest.fixture(scope="module")
def concurrent_claims(tmp_path_factory) -> dict[str, list[dict]]:
    """Four real processes claim simulated GPUs at the same moment, once per round in ROUNDS."""
    base = tmp_path_factory.mktemp("claims")
    work = base / "work"
    work.mkdir()
    rounds = [{**spec, "lock_dir": str(base / f"locks-{key}"), "workers": COUNT} for key, spec in ROUNDS.items()]
    procs = [
        subprocess.Popen([sys.executable, "-c", WORKER, str(work), str(i), json.dumps(rounds)],
                         env=_env(None), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(COUNT)
    ]
    try:
        for r in range(len(rounds)):
            # all workers are ready (round 0: have imported kdpipe) before any claims: claims contend
            _wait_for(lambda: all((work / f"ready-{r}-{i}").exists() for i in range(COUNT))
                      or any(p.poll() is not None for p in procs), 90, f"workers to reach round {r}")
            (work / f"go-{r}").touch()
        for p in procs:
            _, err = p.communicate(timeout=60)
            assert p.returncode == 0, err
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return {key: [json.loads((work / f"result-{r}-{i}.json").read_text()) for i in range(COUNT)]
            for r, key in enumerate(ROUNDS)}


def test_four_processes_on_four_gpus_get_distinct_ids(concurrent_claims):
    results = concurrent_claims["four_ids"]
    assert sorted(r["gpu_id"] for r in results) == ["0", "1", "2", "3"]
    for r in results:
        assert r["name"] == f"cuda:{r['gpu_id']} (simulated)"
        assert r["device"] == "cpu"
    # the holds really ran at the same time (otherwise distinct ids would prove nothing)
    assert max(r["start"] for r in results) < min(r["end"] for r in results)


def test_four_processes_on_two_gpus_never_share_one(concurrent_claims):
    results = concurrent_claims["two_ids"]
    hold = ROUNDS["two_ids"]["hold"]
    assert {r["gpu_id"] for r in results} == {"0", "1"}
    for gpu in ("0", "1"):
        spans = sorted((r["start"], r["end"]) for r in results if r["gpu_id"] == gpu)
        for (_, end), (start, _) in zip(spans, spans[1:]):
            assert end <= start, f"two processes held simulated GPU {gpu} at once: {spans}"
    # with only two GPUs, four holds cannot all finish within one hold's time
    first_start = min(r["start"] for r in results)
    last_end = max(r["end"] for r in results)
    assert last_end - first_start >= 2 * hold


def test_killed_holder_releases_its_lock(tmp_path):
    lock_dir = tmp_path / "locks"
    held = tmp_path / "held"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(lock_dir), str(held)], env=_env(None))
    try:
        _wait_for(lambda: held.exists() or holder.poll() is not None, 60, "the holder to claim")
        assert held.read_text() == "0"

        claimed = threading.Event()

        def claim():
            with claim_gpu(["0"], lock_dir=lock_dir, poll_s=0.05):
                claimed.set()

        t = threading.Thread(target=claim, daemon=True)
        t.start()
        # while the holder lives, the claim waits
        assert not claimed.wait(0.7)
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=10)
        assert claimed.wait(10), "claim did not succeed after the holder was killed"
        t.join(timeout=10)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


def test_claim_gpu_needs_ids(tmp_path):
    with pytest.raises(ValueError):
        with claim_gpu([], lock_dir=tmp_path):
            pass


def test_claim_gpu_takes_first_free_and_releases(tmp_path):
    with claim_gpu(["5", "7"], lock_dir=tmp_path) as first:
        assert first == (0, "5")
        with claim_gpu(["5", "7"], lock_dir=tmp_path) as second:
            assert second == (1, "7")
    with claim_gpu(["5", "7"], lock_dir=tmp_path) as again:
        assert again == (0, "5")


def test_visible_gpu_ids_from_simulation(monkeypatch):
    monkeypatch.setenv(SIMULATED_ENV, " 3, 5 ,")
    assert visible_gpu_ids() == ["3", "5"]


def test_placement_cpu(monkeypatch, tmp_path):
    monkeypatch.delenv(SIMULATED_ENV, raising=False)
    with placement("cpu", lock_dir=tmp_path) as p:
        assert p.device == torch.device("cpu")
        assert p.name == "cpu"
        assert p.gpu_id is None
    # cpu is cpu even when (simulated) GPUs exist, and it claims none
    monkeypatch.setenv(SIMULATED_ENV, "0,1")
    with placement("cpu", lock_dir=tmp_path / "locks") as p:
        assert p.name == "cpu" and p.gpu_id is None
    assert not (tmp_path / "locks").exists()


def test_placement_cuda_without_gpu_raises(monkeypatch, tmp_path):
    monkeypatch.delenv(SIMULATED_ENV, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="cuda"):
        with placement("cuda", lock_dir=tmp_path):
            pass


def test_placement_auto_without_gpu_is_cpu(monkeypatch, tmp_path):
    monkeypatch.delenv(SIMULATED_ENV, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with placement("auto", lock_dir=tmp_path) as p:
        assert p.name == "cpu" and p.device == torch.device("cpu")


@pytest.mark.parametrize("bad", ["gpu", "CUDA", "cuda:0", ""])
def test_placement_rejects_invalid_value(bad, tmp_path):
    with pytest.raises(ValueError):
        with placement(bad, lock_dir=tmp_path):
            pass


def test_placement_auto_with_simulated_gpus(monkeypatch, tmp_path):
    monkeypatch.setenv(SIMULATED_ENV, "0,1")
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    with placement("auto", lock_dir=tmp_path) as p:
        assert p.name == "cuda:0 (simulated)"
        assert re.fullmatch(r"cuda:\d+ \(simulated\)", p.name)
        assert p.gpu_id == "0"
        assert p.device == torch.device("cpu")
        # while this one is held the next claim gets the other id
        with placement("cuda", lock_dir=tmp_path) as q:
            assert q.name == "cuda:1 (simulated)"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the SLURM path needs a real CUDA device")
def test_under_slurm_no_lock_is_taken(monkeypatch, tmp_path):
    monkeypatch.delenv(SIMULATED_ENV, raising=False)
    monkeypatch.setenv("SLURM_JOB_ID", "12345")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", os.environ.get("CUDA_VISIBLE_DEVICES") or "0")
    lock_dir = tmp_path / "locks"
    with placement("cuda", lock_dir=lock_dir) as p:
        assert p.device == torch.device("cuda", 0)
        assert p.name.startswith("cuda:")
        assert not lock_dir.exists()


def test_mig_slices_are_claimed_before_cuda_starts_and_cuda_sees_only_the_claimed_one(monkeypatch, tmp_path):
    """The real (not simulated) path on a CPU machine: torch's CUDA entry points are replaced by
    what a driver with two MIG slices would answer. CUDA reads CUDA_VISIBLE_DEVICES once, when it
    starts; listing both slices then shows only the first. So no CUDA call may come before the claim,
    and the job narrows CUDA_VISIBLE_DEVICES to its slice, which is then its cuda:0."""
    slices = ["MIG-GPU-aaa/1/0", "MIG-GPU-aaa/2/0"]
    started_with = []  # what CUDA_VISIBLE_DEVICES held when CUDA was first asked anything

    def cuda_call(answer):
        def call(*_args):
            started_with.append(os.environ["CUDA_VISIBLE_DEVICES"])
            return answer
        return call

    monkeypatch.delenv(SIMULATED_ENV, raising=False)
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.delenv(devices.JOBS_PER_GPU_ENV, raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", ",".join(slices))
    monkeypatch.setattr(torch.backends.cuda, "is_built", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_available", cuda_call(True))
    monkeypatch.setattr(torch.cuda, "device_count", cuda_call(1))
    monkeypatch.setattr(torch.cuda, "set_device", cuda_call(None))
    monkeypatch.setattr(torch.cuda, "get_device_name", cuda_call("NVIDIA H100 MIG 1g.10gb"))
    assert visible_gpu_ids() == slices and started_with == []
    with placement("cuda", lock_dir=tmp_path) as first:
        assert os.environ["CUDA_VISIBLE_DEVICES"] == slices[0] and set(started_with) == {slices[0]}
        # a second job (its own process: it starts with both slices listed) gets the other slice
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", ",".join(slices))
        started_with.clear()
        with placement("cuda", lock_dir=tmp_path) as second:
            assert os.environ["CUDA_VISIBLE_DEVICES"] == slices[1] and set(started_with) == {slices[1]}
    assert (first.gpu_id, first.device, first.name) == (slices[0], torch.device("cuda", 0),
                                                        "cuda:MIG-GPU-aaa/1/0 (NVIDIA H100 MIG 1g.10gb)")
    assert (second.gpu_id, second.device) == (slices[1], torch.device("cuda", 0))
    # once CUDA has started, the list cannot be narrowed: the first slice, as CUDA shows it
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", ",".join(slices))
    assert visible_gpu_ids() == slices[:1]
