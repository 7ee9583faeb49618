"""The workflow's static checks: lint, the full paper-scale DAG offline, and pinned packaging."""

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from kdpipe import methods, plan
from workflow_copy import ROOT, copy_workflow, planned_jobs, snakemake


def test_snakemake_lint_is_clean(tmp_path):
    proc = snakemake(copy_workflow(tmp_path), "--lint", check=False)
    assert proc.returncode == 0, proc.stdout
    assert "Lints for" not in proc.stdout


def _offline(cmd: list[str]) -> list[str]:
    """Run in a new network namespace (no network at all) when the machine allows it."""
    if shutil.which("unshare") and subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0:
        return ["unshare", "-n", *cmd]
    pytest.skip("cannot create a network namespace here to prove the dry run is offline")


def test_paper_dag_lists_offline(tmp_path):
    """`snakemake -n` with config.yaml plans every job (download included) without any network."""
    workdir = copy_workflow(tmp_path)
    proc = subprocess.run(_offline(["snakemake", "-n", "results/report.pdf"]), cwd=workdir,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    seeds = len(config["classify"]["seeds"])
    pairs = config["classify"]["pairs"]
    teachers, students = {p["teacher"] for p in pairs}, {p["student"] for p in pairs}
    listed = [methods.get(m) for m in config["classify"]["methods"]]
    untaught = sum(not m.needs_teacher for m in listed)  # alone, mutual learning: once per student arch
    classify_models = seeds * (len(teachers) + untaught * len(students) + (len(listed) - untaught) * len(pairs))
    self_distill_models = len(plan.SELF_DISTILL_METHODS) * len(config["self_distill"]["seeds"])  # BYOT, baseline, deep supervision
    ae_models = len(config["autoencoder"]["variants"]) * len(config["autoencoder"]["seeds"])
    assert planned_jobs(proc.stdout) == {
        "download_cifar": 1,
        "prepare_cifar": 1,
        "download_pix2pix": 1,
        "prepare_pix2pix": 1,
        "train": classify_models + self_distill_models + ae_models,
        "tables_kd": 1,
        "tables_self_distill": 1,
        "tables_autoencoder": 1,
        "tables_jobs": 1,
        "tables_reproduction": 1,
        "figures_kd": 1,
        "figures_self_distill": 1,
        "figures_autoencoder": 1,
        "report": 1,
    }
    assert "cifar-100-python.tar.gz" in proc.stdout and "cityscapes.tar.gz" in proc.stdout
    assert not (workdir / "data").exists()


def _pins(requirements: list[str]) -> dict[str, str]:
    pins = {}
    for req in requirements:
        m = re.match(r"^([A-Za-z0-9_.\-]+)\s*(.*)$", req.strip())
        if m and not req.startswith("-"):
            pins[m.group(1).lower()] = m.group(2).replace(" ", "")
    return pins


def test_conda_env_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    env = yaml.safe_load((ROOT / "envs" / "kdpipe.yaml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert _pins(project) == _pins(pip_section)
    assert _pins(project)["torch"] == "==2.14.1"
    assert _pins(project)["torchvision"] == "==0.29.1"


def test_every_rule_has_log_benchmark_and_conda():
    text = "\n".join(p.read_text() for p in sorted((ROOT / "workflow" / "rules").glob("*.smk")))
    rules = re.split(r"^rule ", text, flags=re.M)[1:]
    assert rules
    for body in rules:
        name = body.split(":", 1)[0]
        for directive in ("log:", "benchmark:", "conda:", "threads:"):
            assert directive in body, f"rule {name} has no {directive}"
        if name.startswith("train"):
            assert "gpu=1" in body, f"training rule {name} does not ask for a GPU"


def test_official_cityscapes_needs_the_users_zips(tmp_path):
    """`source: official` plans from zips the user places; without them Snakemake names them."""
    workdir = copy_workflow(tmp_path)
    (workdir / "official.yaml").write_text(yaml.safe_dump({"autoencoder": {"data": {"source": "official"}}}))
    proc = snakemake(workdir, "-n", "results/report.pdf", "--configfile", "official.yaml", check=False)
    assert proc.returncode != 0
    assert "leftImg8bit_trainvaltest.zip" in proc.stdout and "gtFine_trainvaltest.zip" in proc.stdout
    raw = workdir / "data" / "raw" / "cityscapes"
    raw.mkdir(parents=True)
    for name in ("leftImg8bit_trainvaltest.zip", "gtFine_trainvaltest.zip"):
        (raw / name).write_bytes(b"placeholder")
    proc = snakemake(workdir, "-n", "results/report.pdf", "--configfile", "official.yaml")
    assert planned_jobs(proc.stdout)["prepare_cityscapes"] == 1
