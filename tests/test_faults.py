"""Faults a researcher meets: a pre-empted Snakemake run, a damaged checkpoint."""

import json
import os
import signal
import subprocess
import time

import pandas as pd
import pytest
import torch
import yaml

from workflow_copy import copy_workflow, snakemake

pytestmark = pytest.mark.pipeline

# A small, slow-enough teacher: six epochs on 1,200 images.
OVERLAY = {
    "datasets": {"synthetic10": {"num_train": 1200, "num_test": 200}},
    "classify": {"seeds": [0], "teacher_train": {"epochs": 6, "lr_milestones": [4]}},
}
RUN = "results/synthetic10/classify/teacher-resnet14-s0"


@pytest.fixture
def workdir(tmp_path):
    workdir = copy_workflow(tmp_path)
    (workdir / "small.yaml").write_text(yaml.safe_dump(OVERLAY))
    return workdir


def _args():
    return [f"{RUN}/metrics.json", "--cores", "1", "--configfile", "presets/demo.yaml", "small.yaml"]


def _saved_epoch(path) -> int:
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True)["epoch"])
    except Exception:
        return 0


def test_killed_snakemake_run_resumes_its_training_job(workdir):
    proc = subprocess.Popen(["snakemake", *_args()], cwd=workdir, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    resume = workdir / RUN / "resume.pt"
    deadline = time.time() + 600
    while _saved_epoch(resume) < 2:
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the whole job tree, as a pre-empted allocation
    proc.wait()
    killed_at = _saved_epoch(resume)
    assert 2 <= killed_at < 6
    assert not (workdir / RUN / "metrics.json").exists()
    snakemake(workdir, "--unlock", *_args())
    snakemake(workdir, *_args(), timeout=900)
    metrics = json.loads((workdir / RUN / "metrics.json").read_text())
    assert metrics["resumed_from_epoch"] >= killed_at
    assert list(pd.read_csv(workdir / RUN / "history.csv")["epoch"]) == [1, 2, 3, 4, 5, 6]
    assert not resume.exists()


def test_damaged_checkpoint_restarts_the_run(workdir):
    resume = workdir / RUN / "resume.pt"
    resume.parent.mkdir(parents=True)
    resume.write_bytes(b"PK\x03\x04 not really a checkpoint")
    snakemake(workdir, *_args(), timeout=900)
    metrics = json.loads((workdir / RUN / "metrics.json").read_text())
    assert metrics["resumed_from_epoch"] == 0
    log = (workdir / "results/logs/train/synthetic10-classify-teacher-resnet14-s0.log").read_text()
    assert "cannot read checkpoint" in log
