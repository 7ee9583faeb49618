"""A multi-GPU workstation: `snakemake --resources gpu=2` keeps two training jobs busy, one per GPU.

Real Snakemake on the demo preset's four autoencoder runs of one seed, with two simulated GPU ids
(KDPIPE_SIMULATED_GPUS=0,1: each job claims an id with kdpipe.devices' per-GPU lock, then trains
on the CPU). What the jobs recorded proves the claim. Each metrics.json names its device, and
was written when its job ended: ``wall_time_s`` earlier the job started (imports, waiting for a
GPU, training), ``train_time_s`` earlier its training started, the device already claimed.
"""

import json
import os
from itertools import combinations

import pytest
import yaml

from workflow_copy import copy_workflow, snakemake

pytestmark = pytest.mark.pipeline

# The workstation default (a free GPU if there is one) instead of the demo's device: cpu; one seed
# (four jobs on two GPUs are enough to see two at once, and never three).
OVERLAY = {"device": "auto", "autoencoder": {"seeds": [0]}}
GPUS = ["0", "1"]
RUNS = [f"{variant}-s0" for variant in ("baseline", "e1d4_maxpool", "e1d4_e2d3_maxpool", "e1d4_conv")]


def intervals(metrics_path) -> dict:
    """When the job ran, and a stretch when it held its device (training; or as recorded)."""
    metrics = json.loads(metrics_path.read_text())
    end = metrics_path.stat().st_mtime
    if "device_claimed_at" in metrics and "finished_at" in metrics:
        holding = (float(metrics["device_claimed_at"]), float(metrics["finished_at"]))
    else:
        holding = (end - float(metrics["train_time_s"]), end)
    return {"job": (end - float(metrics["wall_time_s"]), end), "holding": holding}


def most_at_once(spans) -> int:
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])  # an end before a start at a tie
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak


def test_two_gpus_two_jobs_at_once_never_one_gpu_shared(tmp_path, monkeypatch):
    workdir = copy_workflow(tmp_path / "w")
    (workdir / "gpus.yaml").write_text(yaml.safe_dump(OVERLAY))
    lock_dir = tmp_path / "locks"
    env = {"KDPIPE_SIMULATED_GPUS": ",".join(GPUS), "KDPIPE_GPU_LOCK_DIR": str(lock_dir)}
    for var in [v for v in os.environ if v.startswith("SLURM_")]:
        monkeypatch.delenv(var)  # inside a SLURM job, placement trusts the scheduler instead of the locks
    targets = [f"results/street_scenes/autoencoder/{run}/metrics.json" for run in RUNS]
    # --cores 4: without the gpu cap, four training jobs (one thread each) would start at once.
    snakemake(workdir, *targets, "--cores", "4", "--resources", "gpu=2",
              "--configfile", "presets/demo.yaml", "gpus.yaml", env=env, timeout=900)
    jobs = []
    for target in targets:
        metrics = json.loads((workdir / target).read_text())
        jobs.append({"run": metrics["run"], "device": metrics["device"], "threads": metrics["threads"],
                     **intervals(workdir / target)})
    assert {j["device"] for j in jobs} == {f"cuda:{g} (simulated)" for g in GPUS}, jobs
    assert all(j["threads"] == 1 for j in jobs), jobs  # torch's thread count is the rule's threads
    # Snakemake never ran more jobs than GPUs, and did run as many.
    assert most_at_once([j["job"] for j in jobs]) == len(GPUS), jobs
    # Two trained at the same time, and no two at the same time on one device.
    overlapping = [(a, b) for a, b in combinations(jobs, 2)
                   if min(a["holding"][1], b["holding"][1]) > max(a["holding"][0], b["holding"][0])]
    assert overlapping, jobs
    assert all(a["device"] != b["device"] for a, b in overlapping), overlapping
    assert sorted(p.name for p in lock_dir.iterdir()) == [f"gpu-{g}.lock" for g in GPUS]
