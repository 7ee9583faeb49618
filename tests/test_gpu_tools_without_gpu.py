"""What CI can check of the GPU tooling without a GPU: the CUDA tests' run configs (built, validated
and trained on the CPU exactly as tests/test_gpu.py builds them), the GPU check's plumbing (a dry
run of benchmarks/gpu_check.sh on the CPU), its time limits, and the GPU smoke preset."""

import copy
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from kdpipe.config_schema import validate_config as validate  # the YAML schema plus the method registry's part

import gpu_runs
from kdpipe import methods, plan, schedule
from kdpipe.training import settings
from kdpipe.training.loop import Recipe

ROOT = Path(__file__).resolve().parents[1]
no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present: tests/test_gpu.py runs these")


def _env():
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))}


def test_gpu_runs_cover_every_method_and_family_with_graphs_and_bf16():
    runs = gpu_runs.runs()
    cfg = gpu_runs.config()
    assert gpu_runs.coverage(runs) == gpu_runs.expected_coverage(cfg)
    assert {"teacher", *methods.METHODS} <= gpu_runs.coverage(runs)["classify"]  # every registered method
    assert len(runs) == 1 + len(methods.METHODS) + len(plan.SELF_DISTILL_METHODS) + len(cfg["autoencoder"]["variants"])
    for key, run in runs.items():
        assert (run["device"], run["train"]["cuda_graphs"], run["train"]["precision"], run["train"]["deterministic"]) \
            == ("cuda", "on", "bf16", True), key
        teacher = gpu_runs.teacher_of(run)
        assert teacher is None or runs[teacher]["role"] == "teacher", key
    # the variants the CUDA tests compare differ in the three settings only
    for name, overlay in gpu_runs.SETTINGS.items():
        other = gpu_runs.runs(overlay)
        assert other.keys() == runs.keys(), name
        for key in runs:
            strip = lambda r: {**r, "train": {k: v for k, v in r["train"].items() if k not in settings.KEYS}}  # noqa: E731
            assert strip(other[key]) == strip(runs[key]), (name, key)
    assert {k: r["train"]["cuda_graphs"] for k, r in gpu_runs.runs(gpu_runs.EAGER_FP32).items()} == dict.fromkeys(runs, "off")


def test_gpu_tests_name_runs_that_exist():
    import test_gpu

    runs = gpu_runs.runs()
    assert set(test_gpu.KILLED) <= set(runs)
    assert {runs[k]["family"] for k in test_gpu.KILLED} == set(plan.FAMILIES)  # one SIGKILL job per family
    assert "classify/alone-resnet8-s0" in gpu_runs.runs(gpu_runs.DEFAULTS)
    assert test_gpu.RUNS == runs


@pytest.mark.parametrize("name", sorted(gpu_runs.SETTINGS) + ["long"])
def test_gpu_runs_without_snakemake_equal_the_validated_ones(name):
    """The GPU machines have no Snakemake: there fill_defaults stands in for the schema's defaults."""
    overlays = [gpu_runs.LONG] if name == "long" else [gpu_runs.SETTINGS[name]]
    raw = gpu_runs.raw_config(*overlays)
    validated, filled = copy.deepcopy(raw), gpu_runs.fill_defaults(copy.deepcopy(raw))
    assert gpu_runs.validate(validated) is True  # Snakemake is here: the real schema ran
    assert filled == validated
    assert plan.training_runs(filled) == plan.training_runs(validated)


def test_gpu_run_configs_are_what_the_loop_reads():
    fields = set(Recipe.__dataclass_fields__)
    for overlay in [*gpu_runs.SETTINGS.values(), gpu_runs.LONG]:
        for key, run in gpu_runs.runs(overlay).items():
            assert set(run["train"]) <= fields | set(settings.KEYS), (key, set(run["train"]) - fields)
            recipe = Recipe.from_dict(run["train"])
            assert recipe.epochs == run["train"]["epochs"] and recipe.batch_size == run["train"]["batch_size"], key
            settings.requested_settings(run["train"])  # raises on a bad value


def test_gpu_run_configs_train_on_the_cpu(tmp_path):
    """Every CUDA test's run config through the real `kdpipe train` code on the CPU (only the device
    and the three GPU settings changed): a key a family no longer reads, or reads under a new name,
    fails here instead of on a GPU."""
    cfg = gpu_runs.config()
    data = gpu_runs.prepare_data(cfg, tmp_path / "data")
    for key, run in gpu_runs.runs().items():  # teachers first: the plan lists them before their students
        cpu = {**run, "device": "cpu", "train": {**run["train"], "cuda_graphs": "off", "precision": "fp32"}}
        teacher = gpu_runs.teacher_of(run)
        gpu_runs.train_in_process(cpu, data, tmp_path / key, tmp_path / teacher / "model.pt" if teacher else None)
        metrics = json.loads((tmp_path / key / "metrics.json").read_text())
        assert metrics["config"] == cpu and len(metrics.get("best", {})) > 0, key
        assert (tmp_path / key / "history.csv").read_text().count("\n") == run["train"]["epochs"] + 1, key


def test_gpu_check_steps_fit_in_eight_minutes():
    """benchmarks/gpu_check.sh: every step has a limit, and the limits (plus the kill grace) add up
    to at most 480 s, so the whole check fits one 10-minute command with room to start."""
    script = (ROOT / "benchmarks" / "gpu_check.sh").read_text()
    steps = re.findall(r"^step (\S+) (\d+) ", script, flags=re.M)
    grace = int(re.search(r"^KILL_AFTER=(\d+)", script, flags=re.M).group(1))
    assert [name for name, _ in steps] == ["env", "pytest", "gpu_throughput", "paper_cost"]
    assert sum(int(limit) for _, limit in steps) + grace * len(steps) <= 480
    assert 'timeout -k "$KILL_AFTER" "$limit"' in script
    # the benchmarks' own budgets end them before their step's limit
    limits = dict(steps)
    assert int(re.search(r"THROUGHPUT_ARGS=\(--budget (\d+)", script).group(1)) < int(limits["gpu_throughput"]) - 20
    assert int(re.search(r"COST_ARGS=\(.*--budget (\d+)", script).group(1)) < int(limits["paper_cost"]) - 20


@no_gpu
def test_gpu_check_without_a_gpu_stops_instead_of_passing(tmp_path):
    """Not a dry run and no CUDA GPU: every CUDA test would skip and nothing would be measured, so
    the check stops at once (exit 2), saying so and what to run instead, and writes no summary."""
    out = tmp_path / "out"
    env = {k: v for k, v in _env().items() if k != "KDPIPE_GPU_CHECK_DRY_RUN"}
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh")], env={**env, "OUT": str(out)},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "gpu_check: no CUDA GPU is visible" in proc.stderr and "KDPIPE_GPU_CHECK_DRY_RUN=1" in proc.stderr
    assert "passed" not in proc.stdout + proc.stderr and not (out / "gpu_check.json").exists()


def test_gpu_check_dry_run_runs_every_stage(tmp_path):
    """KDPIPE_GPU_CHECK_DRY_RUN=1: every step on the CPU at toy size; rows printed as measured, and
    the JSON summary valid and complete."""
    out = tmp_path / "out"
    env = {**_env(), "OUT": str(out), "KDPIPE_GPU_CHECK_DRY_RUN": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh")], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    summary = json.loads((out / "gpu_check.json").read_text())
    assert summary["finished"] is True and summary["passed"] is True
    assert summary["environment"]["dry_run"] is True and summary["environment"]["torch"] == torch.__version__
    assert re.fullmatch(r"[0-9a-f]{40}|unknown.*", summary["environment"]["git_commit"])
    assert set(summary["steps"]) == {"env", "pytest", "gpu_throughput", "paper_cost"}
    assert all(s["exit"] == 0 for s in summary["steps"].values()), summary["steps"]
    # pytest: each CUDA test recorded as skipped, with the reason
    tests = summary["pytest"]["tests"]
    assert tests and all(t["outcome"] == "skipped" and "CUDA" in t["reason"] for t in tests.values())
    # gpu_throughput: every measurement of both models and both sharing counts, in the file and the JSON
    rows = summary["gpu_throughput"]["rows"]
    assert summary["gpu_throughput"]["finished"] is True
    for model in ("resnet20", "ae_pair_256"):
        assert {"plain eager", "eager fp32", "graphs fp32", "graphs bf16", "graphs bf16 nondet", "eval (fp32)"} \
            <= set(rows[model]), rows[model]
    assert "kd_soft graphs bf16" in rows["resnet20"]
    assert set(rows["sharing resnet20"]) == {"1 process", "2 processes"}
    printed = (out / "gpu_throughput.txt").read_text()
    for model, row in rows.items():
        for what in row:
            assert re.search(rf"^{re.escape(model)}\s+{re.escape(what)}\s", printed, flags=re.M), (model, what)
    assert "target >= 27,000 images/s and >= 3.5x" in printed
    # paper_cost: the first job type measured, the others skipped by the budget and said so
    cost = summary["paper_cost"]
    assert cost["finished"] is True and cost["partial"] is True and len(cost["rows"]) == 1
    assert "PARTIAL" in (out / "paper_cost.txt").read_text()
    assert "nvidia-smi" in (out / "env.txt").read_text() or "NVIDIA" in (out / "env.txt").read_text()
    assert "gpu_check: passed" in proc.stdout


@no_gpu
@pytest.mark.parametrize("script", ["gpu_throughput.py", "paper_cost.py"])
def test_benchmark_without_gpu_says_so_and_exits_0(script, tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--summary", str(tmp_path / "s.json")],
                          env={**_env(), "KDPIPE_GPU_CHECK_DRY_RUN": "0"}, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "no CUDA GPU" in proc.stdout and "nothing was measured" in proc.stdout
    assert json.loads((tmp_path / "s.json").read_text())[script.removesuffix(".py")]["rows"] == {}


def test_gpu_smoke_preset_is_a_valid_config_with_teachers_first():
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    for k, v in yaml.safe_load((ROOT / "presets" / "gpu-smoke.yaml").read_text()).items():
        cfg[k] = {**cfg[k], **{kk: ({**cfg[k][kk], **vv} if isinstance(vv, dict) and isinstance(cfg[k].get(kk), dict)
                                    else vv) for kk, vv in v.items()}} if isinstance(v, dict) and k in cfg else v
    validate(cfg, str(ROOT / "workflow" / "schemas" / "config.schema.yaml"))
    runs = plan.training_runs(cfg)
    assert len(runs) == 25 and all(r["seed"] == 0 for r in runs.values())  # 2 x (teacher + 8 methods), 3 BYOT, 4 AE
    assert cfg["classify"]["teacher_train"]["lr"] == 0.05  # the overlay shortened the schedule, kept the recipe
    prio = schedule.train_priorities(cfg, runs)
    teachers = [k for k, r in runs.items() if r.get("role") == "teacher"]
    assert min(prio[k] for k in teachers) > max(v for k, v in prio.items() if k not in teachers)
