"""The demo preset run whole through the real DAG, then the reruns a researcher relies on."""

import json
import subprocess

import pandas as pd
import pytest
import yaml
from pypdf import PdfReader

from kdpipe import methods, plan
from workflow_copy import copy_built, planned_jobs, snakemake

pytestmark = pytest.mark.pipeline
DEMO = ["--configfile", "presets/demo.yaml"]


@pytest.fixture(scope="module")
def demo(built_demo, tmp_path_factory):
    """A copy of the session's demo build (a git repository, as a clone is), for this module to change."""
    return copy_built(built_demo, tmp_path_factory.mktemp("pipeline") / "demo")


def _fmt(mean, std):
    return f"{mean:.2f} ± {std:.2f}"


def test_report_holds_the_kd_table(demo):
    """One methods × pairs table per epoch (best, last): every registered method, mutual learning's
    two students, the paired difference from the student alone."""
    text = "\n".join(page.extract_text() for page in PdfReader(demo / "results" / "report.pdf").pages)
    summary = pd.read_csv(demo / "results" / "tables" / "kd_summary.csv")
    entries = ["teacher"] + [f"{name}{methods.score_suffix(k)}" for name, m in methods.METHODS.items()
                             for k in range(1, m.students + 1)]
    assert list(summary["entry"]) == entries
    lines = text.splitlines()
    for _, row in summary.iterrows():
        rows = [l for l in lines if l.startswith(row["label"] + " ")]
        assert _fmt(row["best_top1_mean"], row["best_top1_std"]) in rows[0], row["entry"]
        assert _fmt(row["last_top1_mean"], row["last_top1_std"]) in rows[1], row["entry"]
        if row["entry"] not in ("teacher", "alone"):
            diff = f"{row['best_top1_diff_mean']:+.2f} ± {row['best_top1_diff_std']:.2f}"
            assert diff in rows[0], row["entry"]
    flat = " ".join(text.split())
    assert "preset: demo" in text
    assert "1. Knowledge distillation: every registered method (" + ", ".join(m.label for m in methods.METHODS.values()) in flat
    assert "Result (best epoch, paired over seeds)" in flat and "With 2 seeds that is weak evidence" in flat
    assert "A. Appendix: jobs" in text


def test_report_holds_the_self_distillation_section(demo):
    text = "\n".join(page.extract_text() for page in PdfReader(demo / "results" / "report.pdf").pages)
    summary = pd.read_csv(demo / "results" / "tables" / "self_distill_summary.csv")
    assert "2 Self-distillation (Be Your Own Teacher)" in text
    assert "Result: Self-distillation" in text
    sd = summary[summary["method"] == "self_distill"].set_index("exit")
    base = summary[summary["method"] == "baseline"].set_index("exit")
    for label, name in (("1/4", "exit1"), ("2/4", "exit2"), ("3/4", "exit3"), ("4/4", "exit4"), ("ensemble", "ensemble")):
        line = next(l for l in text.splitlines() if l.startswith(label + " "))
        assert _fmt(sd.loc[name, "best_top1_mean"], sd.loc[name, "best_top1_std"]) in line
        if name == "exit4":
            assert _fmt(base.loc[name, "best_top1_mean"], base.loc[name, "best_top1_std"]) in line
        else:
            assert "not trained" in line
    # The published per-exit numbers stand beside ours as a labelled reference.
    flat = " ".join(text.split())
    assert "67.85 / 74.57 / 78.23 / 78.64" in flat and "Reference, not measured here" in flat
    metrics = json.loads(next((demo / "results" / "synthetic10" / "self_distill").glob("self_distill-*/metrics.json")).read_text())
    assert [c["exit"] for c in metrics["exits"]] == [1, 2, 3, 4, "ensemble"]
    assert {"top1_exit1", "top1_exit4", "top1_ensemble", "top5_exit2"} <= set(metrics["best"])


def test_every_run_records_what_made_it(demo):
    runs = pd.read_csv(demo / "results" / "tables" / "kd_runs.csv")
    config = yaml.safe_load((demo / "presets" / "demo.yaml").read_text())
    # one row per trained student (mutual learning trains two per run), and the teacher
    seeds = len(config["classify"]["seeds"])
    assert len(runs) == seeds * (1 + sum(m.students for m in methods.METHODS.values()))
    assert runs["run"].nunique() == seeds * (1 + len(methods.METHODS))
    sd_runs = pd.read_csv(demo / "results" / "tables" / "self_distill_runs.csv")
    assert len(sd_runs) == len(config["self_distill"]["seeds"]) * len(plan.SELF_DISTILL_METHODS)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=demo, capture_output=True, text=True).stdout.strip()
    for run_dir in [*(demo / "results" / "synthetic10").glob("*/*"), *(demo / "results" / "street_scenes").glob("*/*")]:
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert metrics["git_commit"] == commit
        assert metrics["device"] == "cpu"
        assert metrics["config"]["run"] == run_dir.name
        score = "miou" if metrics["family"] == "autoencoder" else "top1"
        assert metrics["best"][score] >= metrics["last"][score]
        history = pd.read_csv(run_dir / "history.csv")
        assert len(history) == metrics["config"]["train"]["epochs"]
        assert {"epoch", "lr", "loss", score, "seconds"} <= set(history.columns)
        assert not (run_dir / "resume.pt").exists()
    jobs = pd.read_csv(demo / "results" / "tables" / "jobs.csv")
    ae_runs = pd.read_csv(demo / "results" / "tables" / "autoencoder_runs.csv")
    assert len(ae_runs) == len(config["autoencoder"]["seeds"]) * 4
    assert (jobs["wall_s"] > 0).all() and len(jobs) == 2 + runs["run"].nunique() + len(sd_runs) + len(ae_runs)


def test_report_holds_the_autoencoder_section(demo):
    text = "\n".join(page.extract_text() for page in PdfReader(demo / "results" / "report.pdf").pages)
    summary = pd.read_csv(demo / "results" / "tables" / "autoencoder_summary.csv")
    assert list(summary["variant"]) == ["baseline", "e1d4_maxpool", "e1d4_e2d3_maxpool", "e1d4_conv"]  # the seed's order
    assert "3 Autoencoders teaching each other (Cityscapes)" in text
    assert "Matching direction: formula" in text
    for _, row in summary.iterrows():
        lines = [l for l in text.splitlines() if l.startswith(row["variant"] + " ")]
        assert len(lines) == 2, row["variant"]  # best-epoch and last-epoch tables
        assert _fmt(row["best_miou_mean"], row["best_miou_std"]) in lines[0]
        assert _fmt(row["last_psnr_yx_mean"], row["last_psnr_yx_std"]) in lines[1]
    flat = " ".join(text.split())  # the reference sentence wraps across lines
    assert "pixel accuracy 0.86" in flat and "class IoU 0.35" in flat
    figures = demo / "results" / "figures"
    for variant in summary["variant"]:
        for direction in ("x2y", "y2x"):
            assert (figures / f"autoencoder-{variant}-{direction}.png").stat().st_size > 5000
    metrics = json.loads((demo / "results/street_scenes/autoencoder/e1d4_maxpool-s0/metrics.json").read_text())
    assert {"pixel_acc", "miou", "psnr_yx", "ssim_yx", "l1_yx", "iou_road", "iou_car"} <= set(metrics["best"])


def test_complete_run_has_nothing_to_do(demo):
    proc = snakemake(demo, "-n", "results/report.pdf", *DEMO)
    assert "Nothing to be done" in proc.stdout, proc.stdout[-3000:]


def test_html_report_builds(demo):
    snakemake(demo, "--report", "report.html", *DEMO)
    assert (demo / "report.html").stat().st_size > 10_000


def test_one_temperature_change_reruns_only_that_student(demo):
    config = yaml.safe_load((demo / "presets" / "demo.yaml").read_text())
    pair = dict(config["classify"]["pairs"][0], method_params={"kd_soft": {"temperature": 3.0}})
    overlay = demo / "hotter.yaml"
    overlay.write_text(yaml.safe_dump({"classify": {"pairs": [pair]}}))
    args = ["results/report.pdf", *DEMO, str(overlay)]
    seeds = len(config["classify"]["seeds"])
    assert planned_jobs(snakemake(demo, "-n", *args).stdout) == {
        "train": seeds, "tables_kd": 1, "tables_jobs": 1, "tables_reproduction": 1, "figures_kd": 1, "report": 1}
    classify = demo / "results" / "synthetic10" / "classify"
    before = {d.name: (d / "metrics.json").stat().st_mtime_ns for d in classify.iterdir()}
    proc = snakemake(demo, *args, "--cores", "2", timeout=900)
    changed = {d.name for d in classify.iterdir() if (d / "metrics.json").stat().st_mtime_ns != before[d.name]}
    assert changed == {f"kd_soft-{pair['student']}-from-{pair['teacher']}-s{s}" for s in config["classify"]["seeds"]}
    for name in changed:
        assert json.loads((classify / name / "metrics.json").read_text())["config"]["method_params"]["temperature"] == 3.0
    assert "Nothing to be done" in snakemake(demo, "-n", *args).stdout
