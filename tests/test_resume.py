"""The real ``kdpipe train`` command: a run killed mid-training and rerun ends exactly
where an uninterrupted run ends; a foreign checkpoint is ignored; a KD run trains from a teacher;
a run whose loss turns non-finite stops with one ``kdpipe:`` line."""

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from kdpipe.data.synthetic import prepare_synthetic

EPOCHS = 6

RUN_CONFIG = {
    "family": "classify",
    "dataset": "tiny",
    "dataset_source": "synthetic",
    "device": "cpu",
    "augment": True,
    "run": "alone-resnet8-s0",
    "role": "student",
    "method": "alone",
    "arch": "resnet8",
    "seed": 0,
    "train": {"epochs": EPOCHS, "batch_size": 32, "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4,
              "lr_milestones": [4], "lr_gamma": 0.1},
    "train_subset": None,
}


def _env() -> dict:
    env = dict(os.environ)
    env.pop("KDPIPE_SIMULATED_GPUS", None)
    return env


def command(cfg: dict, data: dict, out: Path, teacher: Path | None = None) -> list[str]:
    cmd = ["kdpipe", "train", "--run-config", json.dumps(cfg),
           "--train", str(data["train"]), "--test", str(data["test"]),
           "--model", str(out / "model.pt"), "--metrics", str(out / "metrics.json"),
           "--history", str(out / "history.csv"), "--resume", str(out / "resume.pt")]
    if teacher is not None:
        cmd += ["--teacher", str(teacher)]
    return cmd


def train(cfg: dict, data: dict, out: Path, teacher: Path | None = None) -> subprocess.Popen:
    out.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(command(cfg, data, out, teacher), env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, timeout: float = 120) -> None:
    try:
        _, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err[-3000:]


def read_metrics(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())


def saved_epoch(path: Path) -> int | None:
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True)["epoch"])
    except Exception:  # not there yet, or being replaced right now
        return None


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("data")
    paths = {"train": d / "train.pt", "test": d / "test.pt"}
    prepare_synthetic({"num_train": 400, "num_test": 100, "num_classes": 10, "seed": 0},
                      train_out=paths["train"], test_out=paths["test"])
    return paths


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data) -> dict:
    """An uninterrupted run and, alongside it (2 cores), a run SIGKILLed mid-training then rerun."""
    base = tmp_path_factory.mktemp("runs")
    straight, killed = base / "straight", base / "killed"
    p_straight = train(RUN_CONFIG, data, straight)
    p_killed = train(RUN_CONFIG, data, killed)
    resume = killed / "resume.pt"
    try:
        killed_at = None
        deadline = time.time() + 120
        while time.time() < deadline and p_killed.poll() is None:
            if resume.exists():
                epoch = saved_epoch(resume)
                if epoch is not None and 2 <= epoch < EPOCHS:
                    os.kill(p_killed.pid, signal.SIGKILL)
                    p_killed.wait(timeout=30)
                    killed_at = epoch
                    break
            time.sleep(0.02)
        assert killed_at is not None, "never caught the run between epochs 2 and 5 to kill it"
        assert p_killed.returncode == -signal.SIGKILL
        p_killed.communicate()
        # the checkpoint survived the kill intact and training had not finished
        state = torch.load(resume, map_location="cpu", weights_only=True)
        killed_state_epoch = int(state["epoch"])
        assert 2 <= killed_state_epoch < EPOCHS
        assert len(state["history"]) == killed_state_epoch
        assert not (killed / "metrics.json").exists()
        # keep a copy to test that a different configuration ignores it
        foreign = base / "foreign-resume.pt"
        foreign.write_bytes(resume.read_bytes())
        finish(p_straight)
    finally:
        for p in (p_straight, p_killed):
            if p.poll() is None:
                p.kill()
                p.wait()
    finish(train(RUN_CONFIG, data, killed))
    return {"straight": straight, "killed": killed, "killed_state_epoch": killed_state_epoch,
            "foreign": foreign, "base": base}


def test_uninterrupted_run_outputs(runs):
    out = runs["straight"]
    m = read_metrics(out)
    assert m["resumed_from_epoch"] == 0
    assert m["device"] == "cpu"
    assert m["last"]["epoch"] == EPOCHS
    assert not (out / "resume.pt").exists(), "the resume checkpoint must be removed after success"
    h = pd.read_csv(out / "history.csv")
    assert h["epoch"].tolist() == list(range(1, EPOCHS + 1))
    # the lr milestone at epoch 4 (0-based) applies from the fifth epoch
    assert h["lr"].tolist() == pytest.approx([0.05] * 4 + [0.005] * 2)
    assert (out / "model.pt").exists()


def test_resumed_run_equals_uninterrupted(runs):
    a, b = read_metrics(runs["straight"]), read_metrics(runs["killed"])
    assert b["resumed_from_epoch"] >= 2
    assert b["resumed_from_epoch"] == runs["killed_state_epoch"]
    for which in ("best", "last"):
        for key in ("epoch", "top1", "top5", "loss", "ce"):
            assert b[which][key] == a[which][key], (which, key)
    ha = pd.read_csv(runs["straight"] / "history.csv")
    hb = pd.read_csv(runs["killed"] / "history.csv")
    assert hb["epoch"].tolist() == list(range(1, EPOCHS + 1))
    for col in ("lr", "loss", "ce", "top1", "top5"):
        assert hb[col].tolist() == ha[col].tolist(), col
    assert not (runs["killed"] / "resume.pt").exists(), "the resume checkpoint must be removed after success"
    # the final weights are the same too
    wa = torch.load(runs["straight"] / "model.pt", weights_only=True)["state_dict"]
    wb = torch.load(runs["killed"] / "model.pt", weights_only=True)["state_dict"]
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


@pytest.fixture(scope="module")
def teacher_path(runs) -> Path:
    return runs["straight"] / "model.pt"


@pytest.fixture(scope="module")
def short_runs(runs, data, teacher_path) -> dict:
    """Two 2-epoch runs side by side (2 cores): one finds another configuration's checkpoint in
    its resume path, the other distils (kd_soft) from the finished run's model."""
    other_cfg = {**RUN_CONFIG, "train": {**RUN_CONFIG["train"], "epochs": 2}}
    foreign_out = runs["base"] / "foreign"
    foreign_out.mkdir()
    (foreign_out / "resume.pt").write_bytes(runs["foreign"].read_bytes())
    assert saved_epoch(foreign_out / "resume.pt") >= 2

    kd_cfg = {**RUN_CONFIG, "run": "kd_soft-resnet8-from-resnet8-s0", "method": "kd_soft", "teacher": "resnet8",
              "teacher_run": "teacher-resnet8-s0", "method_params": {"temperature": 4, "alpha": 0.9},
              "train": {**RUN_CONFIG["train"], "epochs": 2}}
    kd_out = runs["base"] / "kd"

    p_foreign = train(other_cfg, data, foreign_out)
    p_kd = train(kd_cfg, data, kd_out, teacher=teacher_path)
    try:
        finish(p_foreign)
    finally:
        finish(p_kd)
    return {"foreign": foreign_out, "kd": kd_out}


def test_checkpoint_of_another_config_is_ignored(short_runs):
    out = short_runs["foreign"]
    m = read_metrics(out)
    assert m["resumed_from_epoch"] == 0
    h = pd.read_csv(out / "history.csv")
    assert h["epoch"].tolist() == [1, 2]  # trained from scratch, not continued from the foreign epoch
    assert not (out / "resume.pt").exists(), "the resume checkpoint must be removed after success"


def test_kd_soft_run_completes_with_kl_column(short_runs):
    out = short_runs["kd"]
    m = read_metrics(out)
    assert m["resumed_from_epoch"] == 0
    assert m["config"]["method"] == "kd_soft"
    h = pd.read_csv(out / "history.csv")
    assert {"loss", "ce", "kl", "top1", "top5"} <= set(h.columns)
    assert h["epoch"].tolist() == [1, 2]
    assert (h["kl"] > 0).all()
    # total = 0.1 * ce + 0.9 * kl holds per batch, hence for the epoch means too
    assert h["loss"].tolist() == pytest.approx((0.1 * h["ce"] + 0.9 * h["kl"]).tolist(), rel=1e-4)
    assert not (out / "resume.pt").exists()
    assert (out / "model.pt").exists()


def test_non_finite_loss_stops_the_job_with_one_kdpipe_line(data, tmp_path):
    """An lr far too large (weight decay alone multiplies the weights by 1 - lr * wd = -4 per step):
    the loss is NaN within the first epoch, the job exits 1 with one line naming the run, epoch and term."""
    cfg = {**RUN_CONFIG, "train": {**RUN_CONFIG["train"], "lr": 1e4, "lr_milestones": []}}
    out = tmp_path / "diverged"
    proc = train(cfg, data, out)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err[-3000:]
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.startswith("kdpipe")]
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
    assert re.fullmatch(r"kdpipe: run alone-resnet8-s0: loss term 'ce' is (nan|inf) in epoch 1; stopping\. "
                        r"no epoch was saved; fix the config \(e\.g\. lower lr\) and rerun", lines[0]), lines[0]
    assert list(out.iterdir()) == []  # no resume.pt, no outputs, no temp files
