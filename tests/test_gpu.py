"""The GPU path on a real GPU (skipped without CUDA; benchmarks/gpu_check.sh runs these there).

The run configs come from kdpipe.plan on a preset (tests/gpu_runs.py: config.yaml + demo + tiny +
tests/presets/gpu-tests.yaml, validated and checked as the workflow does), so they cannot drift
from the schema: every run of every family — the teacher, every registered method
(kdpipe.methods.METHODS), BYOT and its baseline, every autoencoder variant — with
``cuda_graphs: "on"`` and ``precision: bf16``. tests/test_gpu_tools_without_gpu.py builds and
trains the same configs on the CPU in CI.

* graphs against eager steps (fp32), and bf16 against fp32, per run, in this process;
* two deterministic runs of every run, as two processes side by side, bitwise equal;
* a SIGKILLed job of each family resumed to exactly the uninterrupted job's numbers;
* CUDA defaults (auto): graphs, bf16, deterministic.

Needs only PYTHONPATH=src (no `kdpipe` console script); pytest, pandas and PyYAML, no Snakemake.
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

import gpu_runs

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run benchmarks/gpu_check.sh on one)")

ROOT = Path(__file__).resolve().parents[1]
RUNS = gpu_runs.runs()  # graphs on, bf16, deterministic: the preset's own settings
# One job per family for SIGKILL + resume: DKD (a teacher, a loss that changes with the epoch), BYOT,
# the autoencoder pair with a conv adapter
KILLED = ["classify/dkd-resnet8-from-resnet14-s0", "self_distill/self_distill-resnet18-s0", "autoencoder/e1d4_conv-s0"]


def outputs(out: Path) -> dict:
    return {"metrics": json.loads((out / "metrics.json").read_text()), "history": pd.read_csv(out / "history.csv"),
            "weights": torch.load(out / "model.pt", weights_only=True)["state_dict"]}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    return gpu_runs.prepare_data(gpu_runs.config(), tmp_path_factory.mktemp("gpu-data"))


@pytest.fixture(scope="module")
def teachers(tmp_path_factory, data) -> dict[str, Path]:
    """Each teacher run's model.pt, trained once with the preset's settings."""
    found = {}
    for key, cfg in RUNS.items():
        if cfg.get("role") == "teacher":
            out = tmp_path_factory.mktemp("teacher")
            gpu_runs.train_in_process(cfg, data, out)
            found[key] = out / "model.pt"
    return found


def train(cfg, data, out: Path, teachers) -> dict:
    teacher = gpu_runs.teacher_of(cfg)
    gpu_runs.train_in_process(cfg, data, out, teachers[teacher] if teacher else None)
    return outputs(out)


def without_seconds(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns="seconds")


@pytest.mark.parametrize("name", sorted(RUNS))
def test_graphs_match_eager_and_bf16_stays_close(tmp_path, data, teachers, name):
    eager = train(gpu_runs.runs(gpu_runs.EAGER_FP32)[name], data, tmp_path / "eager", teachers)
    graphs = train(gpu_runs.runs(gpu_runs.GRAPHS_FP32)[name], data, tmp_path / "graphs", teachers)
    bf16 = train(RUNS[name], data, tmp_path / "bf16", teachers)
    assert eager["metrics"]["cuda_graphs"] is False and eager["metrics"]["precision"] == "fp32"
    for m in (graphs["metrics"], bf16["metrics"]):
        assert m["cuda_graphs"] is True, m.get("cuda_graphs_error")
        assert m["graph_captures"] >= 1 and "cuda_graphs_error" not in m
    assert graphs["metrics"]["precision"] == "fp32" and bf16["metrics"]["precision"] == "bf16"
    # the total carries every loss term; the same kernels replayed give (nearly) the same numbers
    loss = eager["history"]["loss"].tolist()
    assert graphs["history"]["loss"].tolist() == pytest.approx(loss, rel=1e-3, abs=1e-5)
    assert bf16["history"]["loss"].tolist() == pytest.approx(loss, rel=0.1, abs=1e-3)


def test_defaults_on_cuda_are_graphs_bf16_deterministic(tmp_path, data, teachers):
    m = train(gpu_runs.runs(gpu_runs.DEFAULTS)["classify/alone-resnet8-s0"], data, tmp_path / "default", teachers)
    assert (m["metrics"]["cuda_graphs"], m["metrics"]["precision"], m["metrics"]["deterministic"]) == (True, "bf16", True)
    assert m["metrics"]["device"].startswith("cuda")


def start_batch(runs: dict, data, folder: Path, teachers=None) -> subprocess.Popen:
    """Train ``runs`` in order in one new process; a student learns from the teacher trained in the
    same batch (or from ``teachers``)."""
    jobs = []
    for key, cfg in runs.items():
        t = gpu_runs.teacher_of(cfg)
        teacher = (teachers or {}).get(t) or (folder / t / "model.pt" if t else None)
        jobs.append(gpu_runs.job(cfg, data, folder / key, teacher))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "jobs.json").write_text(json.dumps(jobs))
    return subprocess.Popen(gpu_runs.batch_command(folder / "jobs.json"), env=gpu_runs.subprocess_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, timeout: float = 300) -> None:
    _, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-4000:]


def assert_bitwise_equal(a: dict, b: dict, what: str) -> None:
    pd.testing.assert_frame_equal(without_seconds(a["history"]), without_seconds(b["history"]), check_exact=True,
                                  obj=what)
    assert a["weights"].keys() == b["weights"].keys()
    for k in a["weights"]:
        assert torch.equal(a["weights"][k], b["weights"][k]), f"{what}: {k}"
    for key in ("best", "last"):
        assert {k: v for k, v in a["metrics"][key].items() if k != "seconds"} == \
               {k: v for k, v in b["metrics"][key].items() if k != "seconds"}, f"{what}: {key}"


def test_two_deterministic_runs_are_bitwise_equal(tmp_path, data):
    """Every run twice, in two processes side by side (as two Snakemake jobs sharing a GPU)."""
    a, b = start_batch(RUNS, data, tmp_path / "a"), start_batch(RUNS, data, tmp_path / "b")
    finish(a)
    finish(b)
    for key in RUNS:
        assert_bitwise_equal(outputs(tmp_path / "a" / key), outputs(tmp_path / "b" / key), key)


def saved_epoch(path: Path):
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True)["epoch"])
    except Exception:  # not there yet, or being replaced
        return None


def test_sigkill_and_resume_equals_uninterrupted(tmp_path, data, teachers):
    long = gpu_runs.runs(gpu_runs.LONG)
    runs = {k: long[k] for k in KILLED}
    epochs = {k: cfg["train"]["epochs"] for k, cfg in runs.items()}
    straight = start_batch(runs, data, tmp_path / "straight", teachers)
    killed = {}
    for key, cfg in runs.items():
        out = tmp_path / "killed" / key
        out.mkdir(parents=True)
        t = gpu_runs.teacher_of(cfg)
        killed[key] = subprocess.Popen(gpu_runs.command(cfg, data, out, teachers[t] if t else None),
                                       env=gpu_runs.subprocess_env(), stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL)
    killed_at, deadline = {}, time.time() + 300
    while len(killed_at) < len(killed) and time.time() < deadline:
        for key, proc in killed.items():
            if key in killed_at or proc.poll() is not None:
                continue
            epoch = saved_epoch(tmp_path / "killed" / key / "resume.pt")
            if epoch is not None and 2 <= epoch <= epochs[key] - 2:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=60)
                killed_at[key] = epoch
        if all(key in killed_at or proc.poll() is not None for key, proc in killed.items()):
            break
        time.sleep(0.005)
    for proc in killed.values():
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert set(killed_at) == set(runs), f"caught between epochs only {killed_at}; epochs are too short to kill in"
    finish(straight)
    finish(start_batch(runs, data, tmp_path / "killed", teachers))  # the same jobs again: they resume
    for key in runs:
        resumed = outputs(tmp_path / "killed" / key)
        # the job may have saved one more epoch between our look and the kill
        assert resumed["metrics"]["resumed_from_epoch"] >= killed_at[key], key
        assert_bitwise_equal(resumed, outputs(tmp_path / "straight" / key), key)


@pytest.mark.parametrize("script", ["gpu_throughput.py", "paper_cost.py"])
def test_benchmarks_run_to_the_end(tmp_path, script):
    """Run by hand (gpu_check.sh runs the benchmarks as steps of their own)."""
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--budget", "60", "--out", str(tmp_path)],
                          env=gpu_runs.subprocess_env(), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    summary = json.loads((tmp_path / f"{script.removesuffix('.py')}.json").read_text())
    assert summary["finished"] is True and summary["rows"]
