"""The GPU path on a real GPU (skipped without CUDA; benchmarks/gpu_check.sh runs these there).

Every family (classifier alone, KD soft and hard with a teacher, BYOT, the autoencoder pair with
max-pool and conv adapters) through the real training loop: CUDA graphs against eager steps,
bf16 against fp32, two deterministic runs bitwise equal, a SIGKILLed run resumed to exactly the
uninterrupted run's numbers, and both GPU benchmarks to the end.

Needs only PYTHONPATH=src (no `kdpipe` console script): subprocesses run ``python -m kdpipe.cli``.
Comparisons of settings run in this process (cheap); two-run determinism and SIGKILL-resume use
separate processes, as Snakemake jobs are.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run benchmarks/gpu_check.sh on one)")

ROOT = Path(__file__).resolve().parents[1]
RECIPE = {"epochs": 2, "batch_size": 32, "lr": 0.05, "lr_milestones": [1]}
ADAM = {"epochs": 2, "batch_size": 8, "lr": 2e-4, "optimizer": "adam", "betas": [0.5, 0.999], "weight_decay": 0,
        "lr_milestones": [1]}
BASE = {"dataset": "tiny", "dataset_source": "synthetic", "device": "cuda", "augment": True, "seed": 0,
        "train_subset": None}
CLASSIFY = {**BASE, "family": "classify", "role": "student", "arch": "resnet8", "train": RECIPE}
RUNS = {
    "alone": {**CLASSIFY, "run": "alone-resnet8-s0", "method": "alone"},
    "kd_soft": {**CLASSIFY, "run": "kd_soft-resnet8-from-resnet14-s0", "method": "kd_soft", "teacher": "resnet14",
                "teacher_run": "teacher-resnet14-s0", "kd": {"temperature": 4, "alpha": 0.9}},
    "kd_hard": {**CLASSIFY, "run": "kd_hard-resnet8-from-resnet14-s0", "method": "kd_hard", "teacher": "resnet14",
                "teacher_run": "teacher-resnet14-s0", "kd": {"alpha": 0.9}},
    "self_distill": {**BASE, "family": "self_distill", "run": "self_distill-resnet18-s0", "method": "self_distill",
                     "arch": "resnet18", "width": 8, "train": RECIPE,
                     "self_distill": {"temperature": 3, "alpha": 0.3, "lam": 0.03, "detach_teacher": True}},
    "ae_maxpool": {**BASE, "family": "autoencoder", "dataset": "scenes", "run": "e1d4_e2d3_maxpool-s0",
                   "method": "e1d4_e2d3_maxpool", "width": 8, "train": ADAM,
                   "variant": {"name": "e1d4_e2d3_maxpool", "order": 0, "pairs": [[1, 4], [2, 3]], "adapter": "maxpool",
                               "alpha": 0.5, "match": "formula", "norm": "l1"}},
    "ae_conv": {**BASE, "family": "autoencoder", "dataset": "scenes", "run": "e1d4_conv-s0", "method": "e1d4_conv",
                "width": 8, "train": ADAM,
                "variant": {"name": "e1d4_conv", "order": 0, "pairs": [[1, 4]], "adapter": "conv", "alpha": 0.5,
                            "match": "formula", "norm": "l1"}},
}
# Loss columns each family writes to history.csv
LOSS_COLUMNS = {"alone": ["loss", "ce"], "kd_soft": ["loss", "ce", "kl"], "kd_hard": ["loss"],
                "self_distill": ["loss"], "ae_maxpool": ["loss"], "ae_conv": ["loss"]}


def env() -> dict:
    e = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))}
    for var in ("KDPIPE_SIMULATED_GPUS", "SLURM_JOB_ID", "KDPIPE_JOBS_PER_GPU"):
        e.pop(var, None)
    return e


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    from kdpipe.data.random_shapes import write_images, write_pairs

    d = tmp_path_factory.mktemp("gpu-data")
    paths = {"tiny": (d / "train.pt", d / "test.pt"), "scenes": (d / "ae-train.pt", d / "ae-test.pt")}
    write_images(paths["tiny"][0], 200, num_classes=10)  # 200 = 6 x 32 + 8: a remainder batch
    write_images(paths["tiny"][1], 100, num_classes=10, seed=1)
    write_pairs(paths["scenes"][0], 36, size=32)  # 36 = 4 x 8 + 4
    write_pairs(paths["scenes"][1], 20, size=32, seed=1)
    return paths


def command(cfg, data, out: Path, teacher=None) -> list[str]:
    train, test = data[cfg["dataset"]]
    cmd = [sys.executable, "-m", "kdpipe.cli", "train", "--run-config", json.dumps(cfg), "--train", str(train),
           "--test", str(test), "--model", str(out / "model.pt"), "--metrics", str(out / "metrics.json"),
           "--history", str(out / "history.csv"), "--resume", str(out / "resume.pt")]
    return cmd + (["--teacher", str(teacher)] if teacher else [])


def outputs(out: Path) -> dict:
    return {"metrics": json.loads((out / "metrics.json").read_text()), "history": pd.read_csv(out / "history.csv"),
            "weights": torch.load(out / "model.pt", weights_only=True)["state_dict"]}


def run(cfg, data, out: Path, teacher=None, timeout=600, in_process=True) -> dict:
    """One `kdpipe train` job: in this process (no start-up cost), or as its own process."""
    out.mkdir(parents=True, exist_ok=True)
    if in_process:
        from kdpipe.training.run import train

        train_path, test_path = data[cfg["dataset"]]
        train(cfg, train_path=train_path, test_path=test_path, teacher_path=teacher, model_path=out / "model.pt",
              metrics_path=out / "metrics.json", history_path=out / "history.csv", resume_path=out / "resume.pt")
        return outputs(out)
    proc = subprocess.run(command(cfg, data, out, teacher), env=env(), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return outputs(out)


def with_settings(cfg, **settings) -> dict:
    return {**cfg, "train": {**cfg["train"], **settings}}


@pytest.fixture(scope="module")
def teacher(tmp_path_factory, data) -> Path:
    cfg = {**CLASSIFY, "run": "teacher-resnet14-s0", "role": "teacher", "method": "teacher", "arch": "resnet14"}
    out = tmp_path_factory.mktemp("teacher")
    run(cfg, data, out)
    return out / "model.pt"


@pytest.mark.parametrize("name", sorted(RUNS))
def test_graphs_match_eager_and_bf16_stays_close(tmp_path, data, teacher, name):
    cfg = RUNS[name]
    t = teacher if cfg.get("teacher") else None
    eager = run(with_settings(cfg, cuda_graphs="off", precision="fp32"), data, tmp_path / "eager", t)
    graphs = run(with_settings(cfg, cuda_graphs="on", precision="fp32"), data, tmp_path / "graphs", t)
    bf16 = run(with_settings(cfg, cuda_graphs="on", precision="bf16"), data, tmp_path / "bf16", t)
    assert eager["metrics"]["cuda_graphs"] is False and eager["metrics"]["precision"] == "fp32"
    assert graphs["metrics"]["cuda_graphs"] is True and graphs["metrics"]["graph_captures"] >= 2
    assert bf16["metrics"]["precision"] == "bf16"
    for col in LOSS_COLUMNS[name]:
        assert graphs["history"][col].tolist() == pytest.approx(eager["history"][col].tolist(), rel=1e-3, abs=1e-5), col
        assert bf16["history"][col].tolist() == pytest.approx(eager["history"][col].tolist(), rel=0.1, abs=1e-3), col


def test_defaults_on_cuda_are_graphs_bf16_deterministic(tmp_path, data):
    m = run(RUNS["alone"], data, tmp_path / "default")["metrics"]
    assert (m["cuda_graphs"], m["precision"], m["deterministic"]) == (True, "bf16", True)
    assert m["device"].startswith("cuda:")


@pytest.mark.parametrize("name", ["kd_soft", "self_distill", "ae_conv"])
def test_two_deterministic_runs_are_bitwise_equal(tmp_path, data, teacher, name):
    cfg, t = RUNS[name], teacher if RUNS[name].get("teacher") else None
    # two processes, as two Snakemake jobs would be
    a = run(cfg, data, tmp_path / "a", t, in_process=False)
    b = run(cfg, data, tmp_path / "b", t, in_process=False)
    ha, hb = a["history"].drop(columns="seconds"), b["history"].drop(columns="seconds")
    pd.testing.assert_frame_equal(ha, hb, check_exact=True)
    for k in a["weights"]:
        assert torch.equal(a["weights"][k], b["weights"][k]), k
    for key in ("best", "last"):
        assert {k: v for k, v in a["metrics"][key].items() if k != "seconds"} == \
               {k: v for k, v in b["metrics"][key].items() if k != "seconds"}


def saved_epoch(path: Path):
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True)["epoch"])
    except Exception:
        return None


@pytest.mark.parametrize("name", ["alone", "ae_maxpool"])
def test_sigkill_and_resume_equals_uninterrupted(tmp_path, data, name):
    cfg = with_settings(RUNS[name], epochs=10, lr_milestones=[6])  # epochs are short on a GPU: a wide window
    straight = run(cfg, data, tmp_path / "straight", in_process=False)
    out = tmp_path / "killed"
    out.mkdir()
    proc = subprocess.Popen(command(cfg, data, out), env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    killed_at, deadline = None, time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        epoch = saved_epoch(out / "resume.pt")
        if epoch is not None and 2 <= epoch < 10:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
            killed_at = epoch
            break
        time.sleep(0.01)
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    assert killed_at is not None, "never caught the run between epochs 2 and 9"
    resumed = run(cfg, data, out, in_process=False)
    assert resumed["metrics"]["resumed_from_epoch"] >= 2
    pd.testing.assert_frame_equal(resumed["history"].drop(columns="seconds"),
                                  straight["history"].drop(columns="seconds"), check_exact=True)
    for k in straight["weights"]:
        assert torch.equal(straight["weights"][k], resumed["weights"][k]), k


@pytest.mark.parametrize("script, args", [("gpu_throughput.py", ["--quick"]), ("paper_cost.py", ["--quick"])])
def test_benchmarks_run_to_the_end(script, args):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args], env=env(), cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    assert "images/s" in proc.stdout or "GPU-hours" in proc.stdout
