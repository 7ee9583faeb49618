"""No table, figure or report outlives a run it was made from (kdpipe.stale), and a damaged
metrics.json is named on one ``kdpipe:`` line (kdpipe.tables.read_metrics).

Snakemake alone rebuilds a missing file only when something downstream has to run anyway: after a
killed training job, a deleted or a damaged metrics.json it said "Nothing to be done" and left the
old report standing. The pipeline tests run on copies of the tiny preset, built once per session."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from kdpipe import stale
from kdpipe.cli import main as kdpipe_main
from kdpipe.tables import MetricsFileError, read_metrics
from workflow_copy import copy_built, snakemake

TINY = ["--configfile", "presets/demo.yaml", "presets/tiny.yaml"]
CLASSIFY = "results/synthetic10/classify"
KD_SOFT = f"{CLASSIFY}/kd_soft-resnet8-from-resnet14-s0"
KD_HARD = f"{CLASSIFY}/kd_hard-resnet8-from-resnet14-s0"
AE_RUN = "results/street_scenes/autoencoder/e1d4_maxpool-s0"
REPORT = "results/report.pdf"
KD_RUNS = "results/tables/kd_runs.csv"


# ---- the sweep, on its own -------------------------------------------------------------------

PRODUCTS = {  # a small pipeline: two runs -> a table -> a figure -> the report (which also reads notes)
    "results/tables/t.csv": ["results/a/metrics.json", "results/b/metrics.json"],
    "results/figures/f.png": ["results/tables/t.csv"],
    "results/report.pdf": ["results/figures/f.png", "results/tables/notes.csv"],
    "results/tables/notes.csv": [],
}


def _make(root: Path, paths) -> None:
    for p in paths:
        (root / p).parent.mkdir(parents=True, exist_ok=True)
        (root / p).write_text(p)


def test_nothing_goes_while_every_input_exists(tmp_path):
    _make(tmp_path, [*PRODUCTS, "results/a/metrics.json", "results/b/metrics.json"])
    lines = []
    assert stale.sweep(tmp_path, PRODUCTS, remove=True, echo=lines.append) == ([], [])
    assert lines == [] and all((tmp_path / p).exists() for p in PRODUCTS)


def test_a_missing_run_takes_everything_made_from_it(tmp_path):
    _make(tmp_path, [*PRODUCTS, "results/a/metrics.json"])  # b's run failed: its metrics.json is gone
    lines = []
    removed, refused = stale.sweep(tmp_path, PRODUCTS, remove=True, echo=lines.append)
    assert removed == ["results/tables/t.csv", "results/figures/f.png", "results/report.pdf"] and refused == []
    assert [p for p in PRODUCTS if (tmp_path / p).exists()] == ["results/tables/notes.csv"]
    assert lines[0] == ("kdpipe: removed results/tables/t.csv: its input results/b/metrics.json is missing "
                        "(its job failed or was killed, or it was deleted); it will be rebuilt")
    assert lines[2] == "kdpipe: removed results/report.pdf: its input results/figures/f.png goes too; it will be rebuilt"


def test_a_dry_run_names_what_goes_and_removes_nothing(tmp_path):
    _make(tmp_path, [*PRODUCTS, "results/a/metrics.json"])
    lines = []
    assert stale.sweep(tmp_path, PRODUCTS, remove=False, note=" (dry run)", echo=lines.append) == ([], [])
    assert all((tmp_path / p).exists() for p in PRODUCTS)
    assert len(lines) == 3 and lines[1].startswith("kdpipe: results/figures/f.png is stale: ")
    assert lines[1].endswith("a real run removes and rebuilds it (dry run)")


def test_a_symlinked_output_goes_but_never_what_it_points_to(tmp_path):
    outside = tmp_path / "precious.pdf"
    outside.write_text("SECRET")
    root = tmp_path / "work"
    _make(root, ["results/tables/t.csv", "results/figures/f.png", "results/tables/notes.csv"])
    (root / "results/report.pdf").symlink_to(outside)
    removed, _ = stale.sweep(root, PRODUCTS, remove=True, echo=lambda line: None)  # a and b are missing
    assert "results/report.pdf" in removed and not os.path.lexists(root / "results/report.pdf")
    assert outside.read_text() == "SECRET"


def test_nothing_is_removed_through_a_folder_that_leads_out_of_results(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    _make(elsewhere, ["t.csv"])
    root = tmp_path / "work"
    (root / "results").mkdir(parents=True)
    (root / "results/tables").symlink_to(elsewhere)
    lines = []
    removed, refused = stale.sweep(root, {"results/tables/t.csv": ["results/a/metrics.json"]}, remove=True,
                                   echo=lines.append)
    assert (removed, refused) == ([], ["results/tables/t.csv"]) and (elsewhere / "t.csv").exists()
    assert "not removed (its folder leads outside results/)" in lines[0]


def test_only_paths_inside_results_may_go(tmp_path):
    assert stale.under_results("results/tables/t.csv")
    for path in ("data/prepared/x/train.pt", "results", "results/../Snakefile", "/results/x", "resultsx/y"):
        assert not stale.under_results(path), path
    _make(tmp_path, ["notes.txt"])
    removed, refused = stale.sweep(tmp_path, {"notes.txt": ["results/a/metrics.json"]}, remove=True,
                                   echo=lambda line: None)
    assert (removed, refused) == ([], ["notes.txt"]) and (tmp_path / "notes.txt").exists()


@pytest.mark.parametrize("argv, runs", [
    (["/usr/bin/snakemake", "results/report.pdf", "--cores", "2"], True),
    (["/venv/lib/python3.11/site-packages/snakemake/__main__.py", "-c1", "--keep-going"], True),
    (["/usr/bin/snakemake", "-np", "results/report.pdf"], False),
    (["/usr/bin/snakemake", "--dry-run"], False),
    (["/usr/bin/snakemake", "--touch", "--cores", "1"], False),
    (["/usr/bin/snakemake", "--unlock"], False),
    (["/usr/bin/snakemake", "--summary"], False),
    (["/usr/bin/snakemake", "--dag"], False),
    (["/usr/bin/python", "-c", "..."], False),  # the workflow loaded by another program
])
def test_only_a_run_of_jobs_removes(argv, runs):
    assert stale.runs_jobs(argv) is runs


def test_a_locked_directory_is_left_to_the_snakemake_holding_it(tmp_path):
    assert not stale.locked(tmp_path)
    (tmp_path / ".snakemake/locks").mkdir(parents=True)
    assert not stale.locked(tmp_path)  # an empty folder holds no lock
    (tmp_path / ".snakemake/locks/0.output.lock").write_text("results/report.pdf\n")
    assert stale.locked(tmp_path)


# ---- a damaged metrics.json: one kdpipe: line naming it -------------------------------------

GOOD = {"run": "r", "seed": 0, "config": {}, "best": {}, "last": {}}


@pytest.mark.parametrize("content, why", [
    (b"\x80\x81\x82 not text", "not UTF-8 text: byte 0x80 at offset 0"),
    (b'{"run": "r", "fam', "not JSON: Unterminated string"),
    (b"[1, 2]", "a JSON list, not an object"),
    (json.dumps({k: v for k, v in GOOD.items() if k != "config"}).encode(), "no 'config'"),
    (json.dumps({**GOOD, "best": 3}).encode(), "'best' is not an object"),
])
def test_damaged_metrics_file_is_named(tmp_path, content, why):
    path = tmp_path / "metrics.json"
    path.write_bytes(content)
    with pytest.raises(MetricsFileError) as err:
        read_metrics(path)
    message = str(err.value)
    assert message.startswith(f"{path} is damaged ({why}") and "\n" not in message
    assert message.endswith("delete it and run Snakemake again, which retrains that run")


def test_missing_metrics_file_is_named(tmp_path):
    with pytest.raises(MetricsFileError, match=f"^cannot read {tmp_path}/metrics.json: No such file or directory$"):
        read_metrics(tmp_path / "metrics.json")


def test_tables_command_fails_on_one_line_naming_the_file(tmp_path, capsys):
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps(GOOD))  # every top-level key, but none of what a KD row reads
    code = kdpipe_main(["tables-kd", "--metrics", str(path), "--runs", str(tmp_path / "r.csv"),
                        "--summary", str(tmp_path / "s.csv")])
    err = capsys.readouterr().err
    assert code == 1 and err == f"kdpipe: {path} is damaged (no key 'method'): delete it and run Snakemake again, " \
                                "which retrains that run\n"
    assert not (tmp_path / "r.csv").exists()


# ---- the pipeline: a killed run, a deleted and a damaged metrics.json -----------------------

pipeline = pytest.mark.pipeline


def _descendants(pid: int) -> list[int]:
    """The processes below ``pid`` (Linux /proc), children first."""
    children = {}
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat_file.parent.name))
    found, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(0), [])
        found += kids
        todo += kids
    return found


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    except OSError:
        return []


def _kill_when_checkpointed(proc: subprocess.Popen, work: Path, run_dir: str, timeout: float = 900) -> None:
    """SIGKILL the `kdpipe train` of ``run_dir`` (a job of ``proc``) as soon as it has written resume.pt.
    It runs in slices of 20 ms, stopped in between, so the kill lands before its last epoch ends."""
    deadline = time.time() + timeout
    train = None
    while train is None:
        assert proc.poll() is None, "snakemake ended before the job could be killed"
        assert time.time() < deadline
        train = next((p for p in _descendants(proc.pid) if {"train", f"{run_dir}/resume.pt"} <= set(_cmdline(p))
                      and any(a.endswith("kdpipe") for a in _cmdline(p)[:2])), None)
        time.sleep(0.02)
    while True:
        os.kill(train, signal.SIGSTOP)
        if (work / run_dir / "resume.pt").exists():
            os.kill(train, signal.SIGKILL)
            return
        assert time.time() < deadline and proc.poll() is None
        os.kill(train, signal.SIGCONT)
        time.sleep(0.02)


def _kd_soft_settings(work: Path) -> str:
    runs = pd.read_csv(work / KD_RUNS)
    return runs.loc[runs["method"] == "kd_soft", "settings"].iloc[0]


@pipeline
def test_killed_run_after_a_config_change_is_resumed_and_reported(built_tiny, tmp_path):
    work = copy_built(built_tiny, tmp_path / "work")
    old_report = (work / REPORT).read_bytes()
    old_mtime = (work / REPORT).stat().st_mtime
    assert "temperature=2" in _kd_soft_settings(work)
    (work / "hotter.yaml").write_text(yaml.safe_dump({"classify": {"method_params": {"kd_soft": {"temperature": 4}}}}))
    args = [REPORT, "--cores", "2", *TINY, "hotter.yaml"]
    log = tmp_path / "killed-run.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen(["snakemake", *args], cwd=work, stdout=fh, stderr=subprocess.STDOUT)
        try:
            _kill_when_checkpointed(proc, work, KD_SOFT)
            proc.wait(timeout=600)
        finally:
            if proc.poll() is None:
                proc.kill()
    out = log.read_text()
    assert proc.returncode != 0
    assert sorted(p.name for p in (work / KD_SOFT).iterdir()) == ["resume.pt"]
    # Right after the failure the report no longer stands as if current.
    assert not (work / REPORT).exists() and not (work / KD_RUNS).exists()
    assert f"kdpipe: removed {REPORT}: " in out

    rerun = snakemake(work, *args, timeout=900)
    assert "Nothing to be done" not in rerun.stdout
    metrics = json.loads((work / KD_SOFT / "metrics.json").read_text())
    assert metrics["config"]["method_params"]["temperature"] == 4
    assert metrics["resumed_from_epoch"] >= 1, "the killed run did not resume from its resume.pt"
    assert not (work / KD_SOFT / "resume.pt").exists()
    assert "temperature=4" in _kd_soft_settings(work)
    assert (work / REPORT).stat().st_mtime > old_mtime and (work / REPORT).read_bytes() != old_report
    assert "Nothing to be done" in snakemake(work, "-n", *args).stdout


@pipeline
def test_deleted_metrics_file_retrains_its_run_and_rebuilds_the_report(built_tiny, tmp_path):
    work = copy_built(built_tiny, tmp_path / "work")
    old = {p: (work / p).stat().st_mtime for p in (REPORT, "results/tables/autoencoder_runs.csv", f"{AE_RUN}/model.pt")}
    (work / AE_RUN / "metrics.json").unlink()
    dry = snakemake(work, "-n", REPORT, *TINY)  # says what a real run removes, removes nothing
    assert f"kdpipe: {REPORT} is stale: " in dry.stdout and (work / REPORT).exists()
    run = snakemake(work, REPORT, "--cores", "2", *TINY, timeout=900)
    assert f"kdpipe: removed results/tables/autoencoder_runs.csv: its input {AE_RUN}/metrics.json is missing" in run.stdout
    assert (work / AE_RUN / "metrics.json").exists()
    for path, mtime in old.items():
        assert (work / path).stat().st_mtime > mtime, f"{path} was not rebuilt"
    # Tables not made from the missing run are left as they were (the KD tables are: their cost column
    # reads every family's run, since jobs of all families may have shared a GPU).
    assert "removed results/tables/self_distill_runs.csv" not in run.stdout
    assert "removed results/tables/kd_runs.csv" in run.stdout


@pipeline
def test_damaged_metrics_file_stops_the_report_until_it_is_deleted(built_tiny, tmp_path):
    work = copy_built(built_tiny, tmp_path / "work")
    old_mtime = (work / REPORT).stat().st_mtime
    (work / KD_HARD / "metrics.json").write_bytes(b"\x80\x81 half a file")
    args = [REPORT, "--cores", "2", *TINY]
    failed = snakemake(work, *args, check=False, timeout=900)
    assert failed.returncode != 0
    line = f"kdpipe: {KD_HARD}/metrics.json is damaged (not UTF-8 text"
    # Three table jobs read that file (KD runs, reproduction gaps, job costs); whichever starts first
    # fails and Snakemake starts no other, so the message is in that job's log.
    readers = ("tables_kd", "tables_reproduction", "tables_jobs")
    logs = [work / f"results/logs/{name}.log" for name in readers]
    assert any(log.exists() and line in log.read_text() for log in logs), [
        log.read_text() if log.exists() else None for log in logs]
    assert line in failed.stdout  # the profile shows a failed job's log
    assert not (work / REPORT).exists(), "the old report stands after its tables failed"
    # Run again without fixing it: it fails again and does not claim success.
    again = snakemake(work, *args, check=False, timeout=900)
    assert again.returncode != 0 and "Nothing to be done" not in again.stdout and not (work / REPORT).exists()
    # Deleting the file, as the message says, retrains that run and rebuilds the report.
    (work / KD_HARD / "metrics.json").unlink()
    snakemake(work, *args, timeout=900)
    assert json.loads((work / KD_HARD / "metrics.json").read_text())["run"] == KD_HARD.rsplit("/", 1)[1]
    assert (work / REPORT).stat().st_mtime > old_mtime
