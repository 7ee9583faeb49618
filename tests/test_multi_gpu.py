"""A multi-GPU workstation: `snakemake --resources gpu=2` keeps two training jobs busy, one per GPU.

Real Snakemake on a small overlay of the demo preset, with two simulated GPU ids
(KDPIPE_SIMULATED_GPUS=0,1: each job claims an id with kdpipe.devices' per-GPU lock, then trains
on the CPU). What the jobs recorded proves the claim: each metrics.json names its device and when
the job ran (finished when metrics.json was written, ``wall_time_s`` earlier it started).
"""

import json
import os
from itertools import combinations

import pytest
import yaml

from workflow_copy import copy_workflow, snakemake

pytestmark = pytest.mark.pipeline

# Eight autoencoder runs (4 variants x 2 seeds), short: two epochs on 200 small scenes.
OVERLAY = {
    "device": "auto",  # the workstation default: a free GPU if there is one
    "autoencoder": {"seeds": [0, 1], "data": {"num_train": 200, "num_test": 32}, "train": {"epochs": 2}},
}
GPUS = ["0", "1"]


def interval(metrics_path) -> tuple[float, float]:
    """When the job held its device: from the start of training to the writing of metrics.json."""
    metrics = json.loads(metrics_path.read_text())
    if "started_at" in metrics and "finished_at" in metrics:
        return float(metrics["started_at"]), float(metrics["finished_at"])
    end = metrics_path.stat().st_mtime
    return end - float(metrics["wall_time_s"]), end


def most_at_once(intervals) -> int:
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])  # an end before a start at a tie
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak


def test_two_gpus_two_jobs_at_once_never_one_gpu_shared(tmp_path, monkeypatch):
    workdir = copy_workflow(tmp_path / "w")
    (workdir / "small.yaml").write_text(yaml.safe_dump(OVERLAY))
    lock_dir = tmp_path / "locks"
    env = {"KDPIPE_SIMULATED_GPUS": ",".join(GPUS), "KDPIPE_GPU_LOCK_DIR": str(lock_dir)}
    for var in [v for v in os.environ if v.startswith("SLURM_")]:
        monkeypatch.delenv(var)  # inside a SLURM job, placement trusts the scheduler instead of the locks
    targets = [f"results/street_scenes/autoencoder/{variant}-s{seed}/metrics.json"
               for variant in ("baseline", "e1d4_maxpool", "e1d4_e2d3_maxpool", "e1d4_conv") for seed in (0, 1)]
    # --cores 4: without the gpu cap, four training jobs (one thread each) would start at once.
    snakemake(workdir, *targets, "--cores", "4", "--resources", "gpu=2",
              "--configfile", "presets/demo.yaml", "small.yaml", env=env, timeout=900)
    jobs = []
    for target in targets:
        metrics = json.loads((workdir / target).read_text())
        jobs.append({"run": metrics["run"], "device": metrics["device"], "threads": metrics["threads"],
                     "interval": interval(workdir / target)})
    assert {j["device"] for j in jobs} == {f"cuda:{g} (simulated)" for g in GPUS}, jobs
    assert all(j["threads"] == 1 for j in jobs), jobs  # torch's thread count is the rule's threads
    assert most_at_once([j["interval"] for j in jobs]) == len(GPUS), jobs
    overlapping = [(a, b) for a, b in combinations(jobs, 2)
                   if min(a["interval"][1], b["interval"][1]) - max(a["interval"][0], b["interval"][0]) > 0]
    assert overlapping, jobs  # two did run at once...
    assert all(a["device"] != b["device"] for a, b in overlapping), overlapping  # ...each on its own GPU
    assert sorted(p.name for p in lock_dir.iterdir()) == [f"gpu-{g}.lock" for g in GPUS]
