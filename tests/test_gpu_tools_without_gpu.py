"""On a machine without CUDA the GPU benchmarks and the GPU check say so and succeed, and the GPU
smoke preset is a valid config (what a user without a GPU can check of the GPU tooling)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from kdpipe.config_schema import validate_config as validate  # the YAML schema plus the method registry's part

from kdpipe import plan, schedule

ROOT = Path(__file__).resolve().parents[1]
no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present: tests/test_gpu.py runs these")


def _env():
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))}


@no_gpu
@pytest.mark.parametrize("script", ["gpu_throughput.py", "paper_cost.py"])
def test_benchmark_without_gpu_says_so_and_exits_0(script):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script)], env=_env(), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "no CUDA GPU" in proc.stdout and "nothing was measured" in proc.stdout


@no_gpu
def test_gpu_check_script_runs_without_gpu(tmp_path):
    """The CUDA tests skip, the benchmarks say there is no GPU; the run still succeeds."""
    env = {**_env(), "OUT": str(tmp_path / "out")}
    script = (ROOT / "benchmarks" / "gpu_check.sh").read_text()
    (tmp_path / "check.sh").write_text(script.replace('cd "$(dirname "$0")/.."', f'cd "{ROOT}"'))
    proc = subprocess.run(["bash", str(tmp_path / "check.sh")], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    out = tmp_path / "out"
    assert "skipped" in (out / "pytest.txt").read_text()
    for name in ("gpu_throughput", "paper_cost"):
        assert "no CUDA GPU" in (out / f"{name}.txt").read_text()
    assert "available False" in (out / "env.txt").read_text()


def test_gpu_smoke_preset_is_a_valid_config_with_teachers_first():
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    for k, v in yaml.safe_load((ROOT / "presets" / "gpu-smoke.yaml").read_text()).items():
        cfg[k] = {**cfg[k], **{kk: ({**cfg[k][kk], **vv} if isinstance(vv, dict) and isinstance(cfg[k].get(kk), dict)
                                    else vv) for kk, vv in v.items()}} if isinstance(v, dict) and k in cfg else v
    validate(cfg, str(ROOT / "workflow" / "schemas" / "config.schema.yaml"))
    runs = plan.training_runs(cfg)
    assert len(runs) == 22 and all(r["seed"] == 0 for r in runs.values())  # 2 x (teacher + 7 methods), 2 BYOT, 4 AE
    assert cfg["classify"]["teacher_train"]["lr"] == 0.05  # the overlay shortened the schedule, kept the recipe
    prio = schedule.train_priorities(cfg, runs)
    teachers = [k for k, r in runs.items() if r.get("role") == "teacher"]
    assert min(prio[k] for k in teachers) > max(v for k, v in prio.items() if k not in teachers)
