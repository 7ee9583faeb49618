"""The demo preset run whole through the real DAG, then the reruns a researcher relies on."""

import json
import subprocess

import pandas as pd
import pytest
import yaml
from pypdf import PdfReader

from workflow_copy import copy_workflow, planned_jobs, snakemake

pytestmark = pytest.mark.pipeline
DEMO = ["--configfile", "presets/demo.yaml"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """A temporary copy of the project (a git repository, as a clone is) with the demo built."""
    workdir = copy_workflow(tmp_path_factory.mktemp("demo"))
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "demo"]):
        subprocess.run(cmd, cwd=workdir, check=True)
    snakemake(workdir, "results/report.pdf", "--cores", "2", *DEMO, timeout=1200)
    return workdir


def _fmt(mean, std):
    return f"{mean:.2f} ± {std:.2f}"


def test_report_holds_the_kd_table(demo):
    text = "\n".join(page.extract_text() for page in PdfReader(demo / "results" / "report.pdf").pages)
    summary = pd.read_csv(demo / "results" / "tables" / "kd_summary.csv")
    assert list(summary["method"]) == ["teacher", "alone", "kd_soft", "kd_hard"]
    for _, row in summary.iterrows():
        line = next(l for l in text.splitlines() if l.startswith(row["label"] + " "))
        assert _fmt(row["best_top1_mean"], row["best_top1_std"]) in line
        assert _fmt(row["last_top1_mean"], row["last_top1_std"]) in line
    assert "preset: demo" in text
    assert "Result: KD with soft targets" in text
    assert "A. Appendix: jobs" in text


def test_every_run_records_what_made_it(demo):
    runs = pd.read_csv(demo / "results" / "tables" / "kd_runs.csv")
    config = yaml.safe_load((demo / "presets" / "demo.yaml").read_text())
    assert len(runs) == len(config["classify"]["seeds"]) * 4
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=demo, capture_output=True, text=True).stdout.strip()
    for run_dir in (demo / "results" / "synthetic10" / "classify").iterdir():
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert metrics["git_commit"] == commit
        assert metrics["device"] == "cpu"
        assert metrics["config"]["run"] == run_dir.name
        assert metrics["best"]["top1"] >= metrics["last"]["top1"]
        history = pd.read_csv(run_dir / "history.csv")
        assert len(history) == metrics["config"]["train"]["epochs"]
        assert {"epoch", "lr", "loss", "ce", "top1", "top5", "seconds"} <= set(history.columns)
        assert not (run_dir / "resume.pt").exists()
    jobs = pd.read_csv(demo / "results" / "tables" / "jobs.csv")
    assert (jobs["wall_s"] > 0).all() and len(jobs) == 1 + len(runs)


def test_complete_run_has_nothing_to_do(demo):
    proc = snakemake(demo, "-n", "results/report.pdf", *DEMO)
    assert "Nothing to be done" in proc.stdout, proc.stdout[-3000:]


def test_html_report_builds(demo):
    snakemake(demo, "--report", "report.html", *DEMO)
    assert (demo / "report.html").stat().st_size > 10_000


def test_one_temperature_change_reruns_only_that_student(demo):
    config = yaml.safe_load((demo / "presets" / "demo.yaml").read_text())
    pair = dict(config["classify"]["pairs"][0], temperature=3.0)
    overlay = demo / "hotter.yaml"
    overlay.write_text(yaml.safe_dump({"classify": {"pairs": [pair]}}))
    args = ["results/report.pdf", *DEMO, str(overlay)]
    seeds = len(config["classify"]["seeds"])
    assert planned_jobs(snakemake(demo, "-n", *args).stdout) == {
        "distill_classifier": seeds, "tables_kd": 1, "tables_jobs": 1, "figures_kd": 1, "report": 1}
    classify = demo / "results" / "synthetic10" / "classify"
    before = {d.name: (d / "metrics.json").stat().st_mtime_ns for d in classify.iterdir()}
    proc = snakemake(demo, *args, "--cores", "2", timeout=900)
    assert "rule distill_classifier" in proc.stdout or "localrule distill_classifier" in proc.stdout
    changed = {d.name for d in classify.iterdir() if (d / "metrics.json").stat().st_mtime_ns != before[d.name]}
    assert changed == {f"kd_soft-{pair['student']}-from-{pair['teacher']}-s{s}" for s in config["classify"]["seeds"]}
    for name in changed:
        assert json.loads((classify / name / "metrics.json").read_text())["config"]["kd"]["temperature"] == 3.0
    assert "Nothing to be done" in snakemake(demo, "-n", *args).stdout
