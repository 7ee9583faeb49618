"""The pipeline on a real SLURM cluster, through profiles/slurm.

A one-node cluster (tests/slurm_cluster.py) runs on this machine for the module. The tiny preset
(presets/tiny.yaml over the demo: every family and variant, one seed, short; here without its
sweeps and with two methods, as a sweep point or a method is one more job of a rule that runs
anyway) goes through the profile to results/report.pdf with every job a SLURM job, while one
training job is cancelled with scancel half-way and resumes from its checkpoint when Snakemake
resubmits it; a job that fails inside SLURM fails the run and its log is shown.

The profile is used as it is, plus what this test cluster lacks (TEST_OVERRIDES, written to a
profile of its own beside it): it has a few CPUs and no GPUs, no accounts and no accounting storage.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from slurm_cluster import start_cluster, stop_cluster, unavailable_reason
from workflow_copy import copy_workflow, planned_jobs

pytestmark = pytest.mark.pipeline

DEMO = ["--configfile", "presets/demo.yaml"]
# The tiny preset, but the self-distillation job trains longer (10 epochs of about a second each):
# long enough to be cancelled half-way. No sweeps and two methods: 21 SLURM jobs, not 29.
CANCELLABLE = {"self_distill": {"train_subset": 500, "train": {"epochs": 10, "lr_milestones": [8]}},
               "classify": {"methods": ["alone", "kd_soft"], "sweeps": None}}
TINY = ["--configfile", "presets/demo.yaml", "presets/tiny.yaml", "cancellable.yaml"]
PROFILE = ["--profile", "profiles/slurm-test"]
# What the test cluster differs in from a real one; everything else comes from profiles/slurm.
TEST_OVERRIDES = {
    # No GPUs here (no gres): sbatch refuses --gpus. gpu=0 drops the request (the plugin adds
    # --gpus only for gpu > 0), for the test run only: the rule and the profile keep gpu=1,
    # which locally still caps concurrency under --resources gpu=N.
    "set-resources": {"train": {"gpu": 0}},
    # A few CPUs on this node (two here): one per job, as the local demo (4 might never fit).
    "set-threads": {"train": 1},
    # No accounting storage (see slurm_cluster.py): job states from squeue.
    "slurm-status-command": "squeue",
    # Jobs last seconds here, not hours: first status check after 2 s instead of 40.
    "slurm-init-seconds-before-status-checks": 2,
    # Keep every job's SLURM log, not only the failed ones', for the assertions below.
    "slurm-keep-successful-logs": True,
}
# The job cancelled half-way, once it has saved two epochs (of ten). No other training job waits
# for it, so its resubmission at the back of SLURM's queue does not hold the run up.
CANCEL_ONE_OF = ["synthetic10/self_distill/self_distill-resnet18-s0"]
FAILING_RUN = "synthetic10/classify/teacher-resnet14-s0"
# Snakemake with the executor's status checks at most a few seconds apart (see the script).
SNAKEMAKE = [sys.executable, str(Path(__file__).with_name("slurm_snakemake.py"))]
SUBMITTED = re.compile(r"Job (\d+) has been submitted with SLURM jobid (\d+) \(log: (\S+)\)\.")


@pytest.fixture(scope="module")
def cluster():
    reason = unavailable_reason()
    if reason:
        pytest.skip(f"no SLURM test cluster on this machine: {reason}")
    cluster = start_cluster()
    yield cluster
    stop_cluster(cluster)


def deep_merge(base: dict, overlay: dict) -> dict:
    """``overlay`` on top of ``base``, key by key at every level (as Snakemake merges config files)."""
    merged = dict(base)
    for key, value in overlay.items():
        both = isinstance(value, dict) and isinstance(merged.get(key), dict)
        merged[key] = deep_merge(merged[key], value) if both else value
    return merged


def slurm_workdir(path: Path) -> Path:
    """A copy of the project (a git repository, as a clone is) with the test profile beside profiles/slurm."""
    workdir = copy_workflow(path)
    (workdir / "cancellable.yaml").write_text(yaml.safe_dump(CANCELLABLE))
    profile = deep_merge(yaml.safe_load((workdir / "profiles" / "slurm" / "config.yaml").read_text()), TEST_OVERRIDES)
    (workdir / "profiles" / "slurm-test").mkdir()
    (workdir / "profiles" / "slurm-test" / "config.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "slurm"]):
        subprocess.run(cmd, cwd=workdir, check=True, capture_output=True)
    return workdir


def start_snakemake(cluster, workdir: Path, *args: str) -> subprocess.Popen:
    out = open(workdir / "snakemake.out", "w")
    return subprocess.Popen(SNAKEMAKE + list(args), cwd=workdir, stdout=out, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, **cluster.env}, start_new_session=True)


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()  # Snakemake cancels its SLURM jobs on the way out
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def finish(proc: subprocess.Popen, workdir: Path, timeout: float) -> str:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop(proc)
        raise AssertionError(f"snakemake ran over {timeout:.0f} s:\n{(workdir / 'snakemake.out').read_text()[-6000:]}")
    return (workdir / "snakemake.out").read_text()


def submissions(output: str, workdir: Path) -> list[dict]:
    """Every sbatch the executor made: SLURM job id, rule, wildcards, SLURM log (from Snakemake's output)."""
    subs = []
    for _, slurm_id, log in SUBMITTED.findall(output):
        rule_dir, wildcards = Path(log).relative_to(workdir / "logs" / "slurm").parts[:2]
        subs.append({"id": slurm_id, "rule": rule_dir.removeprefix("rule_"),
                     "wildcards": wildcards if wildcards != f"{slurm_id}.log" else "", "log": Path(log)})
    return subs


def saved_epoch(path: Path) -> int:
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True)["epoch"])
    except Exception:  # not there yet, or being replaced
        return 0


def cancel_half_way(cluster, workdir: Path, proc: subprocess.Popen) -> dict:
    """scancel the first job of CANCEL_ONE_OF to have saved two epochs; return its run, SLURM id, epoch."""
    deadline = time.monotonic() + 600
    while True:
        assert proc.poll() is None, "snakemake ended before a job could be cancelled:\n" + \
            (workdir / "snakemake.out").read_text()[-6000:]
        assert time.monotonic() < deadline, f"none of {CANCEL_ONE_OF} saved two epochs in time"
        for run in CANCEL_ONE_OF:
            epoch = saved_epoch(workdir / "results" / run / "resume.pt")
            if epoch >= 2:
                comment = "_".join(["rule_train_wildcards", *run.split("/")])  # the plugin's sbatch --comment
                running = cluster.run("squeue", "-h", "--states=RUNNING", "-o", "%i|%k").stdout.split()
                ids = [line.split("|")[0] for line in running if line.split("|")[1] == comment]
                assert len(ids) == 1, f"no single running SLURM job for {run}: {running}"
                cluster.run("scancel", ids[0])
                return {"run": run, "id": ids[0], "epoch_seen": epoch}
        time.sleep(0.2)


@pytest.fixture(scope="module")
def demo(cluster, tmp_path_factory):
    """The tiny preset through the profile; the self-distillation job is cancelled with scancel half-way."""
    workdir = slurm_workdir(tmp_path_factory.mktemp("slurm-demo"))
    env = {**os.environ, **cluster.env}
    plan = planned_jobs(subprocess.run(["snakemake", "-n", "results/report.pdf", *TINY, *PROFILE], cwd=workdir,
                                       capture_output=True, text=True, env=env, check=True).stdout)
    proc = start_snakemake(cluster, workdir, "results/report.pdf", *TINY, *PROFILE)
    try:
        cancelled = cancel_half_way(cluster, workdir, proc)
    except BaseException:
        stop(proc)
        raise
    output = finish(proc, workdir, timeout=900)
    assert proc.returncode == 0, output[-6000:]
    return {"workdir": workdir, "output": output, "plan": plan, "cancelled": cancelled, "node": cluster.node,
            "subs": submissions(output, workdir), "ledger": {r["JobId"]: r for r in cluster.completed_jobs()}}


def test_profile_scales_with_the_preset(cluster, tmp_path):
    """The profile sets defaults only: runtime and memory of a training job come from the preset."""
    workdir = slurm_workdir(tmp_path / "w")
    profile = yaml.safe_load((workdir / "profiles" / "slurm" / "config.yaml").read_text())
    assert profile["executor"] == "slurm" and profile["retries"] >= 1 and profile["jobs"] >= 2
    assert {"runtime", "mem_mb"} <= set(profile["default-resources"])
    assert profile["set-resources"]["train"]["cpus_per_gpu"] == profile["set-threads"]["train"]
    assert not {"runtime", "mem_mb"} & set(profile["set-resources"]["train"])
    assert profile["rerun-incomplete"] and profile["show-failed-logs"] and profile["printshellcmds"]
    env = {**os.environ, **cluster.env}
    for configs in ([], DEMO):  # config.yaml (a day per model), then the demo preset (minutes)
        config = yaml.safe_load((workdir / "config.yaml").read_text())
        for path in configs[1:]:
            config = deep_merge(config, yaml.safe_load((workdir / path).read_text()))
        c = config["classify"]
        target = f"results/{c['dataset']}/classify/teacher-{c['pairs'][0]['teacher']}-s{c['seeds'][0]}/metrics.json"
        proc = subprocess.run(["snakemake", "-n", target, *configs, "--profile", "profiles/slurm"], cwd=workdir,
                              capture_output=True, text=True, env=env)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        out = proc.stdout
        train = out[out.index("rule train:"):]
        resources = train[train.index("resources:"):].splitlines()[0]
        wanted = config["resources"]["train"]
        assert f"runtime={wanted['runtime']}," in resources and f"mem_mb={wanted['mem_mb']}," in resources, resources
        assert "gpu=1" in resources and f"cpus_per_gpu={profile['set-resources']['train']['cpus_per_gpu']}" in resources


def test_demo_runs_every_job_on_slurm(demo):
    workdir, subs, ledger = demo["workdir"], demo["subs"], demo["ledger"]
    assert (workdir / "results" / "report.pdf").stat().st_size > 10_000
    # Every job of the plan went through sbatch (plus the one resubmission), none ran locally.
    submitted = Counter(s["rule"] for s in subs)
    assert submitted == Counter({**demo["plan"], "train": demo["plan"]["train"] + 1}), (submitted, demo["plan"])
    # ...and slurmctld's own ledger has each one, completed on this node (the cancelled one aside).
    for sub in subs:
        record = ledger[sub["id"]]
        expected = "CANCELLED" if sub["id"] == demo["cancelled"]["id"] else "COMPLETED"
        assert (record["JobState"], record["NodeList"]) == (expected, demo["node"]), record
        assert sub["log"].exists(), sub
    # Each training job recorded the SLURM job it ran in; the jobs table shows it.
    jobs = pd.read_csv(workdir / "results" / "tables" / "jobs.csv", dtype={"slurm_job_id": str})
    train_rows = jobs[jobs["rule"] == "train"]
    assert len(train_rows) == demo["plan"]["train"]
    final = {s["wildcards"]: s["id"] for s in subs if s["rule"] == "train"}  # the last submission of each
    for metrics_path in (workdir / "results").glob("*/*/*/metrics.json"):
        metrics = json.loads(metrics_path.read_text())
        run = "/".join(metrics_path.parent.parts[-3:])
        assert metrics["slurm_job_id"] == final["_".join(run.split("/"))], run
        assert ledger[metrics["slurm_job_id"]]["JobState"] == "COMPLETED"
        row = train_rows[train_rows["job"] == "-".join(run.split("/"))]
        assert list(row["slurm_job_id"]) == [metrics["slurm_job_id"]], run


def test_cancelled_training_job_resumes_from_its_checkpoint(demo):
    workdir, cancelled, output = demo["workdir"], demo["cancelled"], demo["output"]
    run, name = cancelled["run"], cancelled["run"].split("/")[-1]
    assert f"SLURM-job '{cancelled['id']}' failed, SLURM status is: 'CANCELLED'" in output, output[-6000:]
    tries = [s for s in demo["subs"] if s["wildcards"] == run.replace("/", "_")]
    assert [s["id"] for s in tries][0] == cancelled["id"] and len(tries) == 2  # resubmitted once
    metrics = json.loads((workdir / "results" / run / "metrics.json").read_text())
    epochs = metrics["config"]["train"]["epochs"]
    resumed = metrics["resumed_from_epoch"]
    assert cancelled["epoch_seen"] <= resumed < epochs, (cancelled, resumed)
    assert metrics["slurm_job_id"] == tries[1]["id"]
    # The second job's log: it resumed, and trained only the epochs the first did not finish.
    log = (workdir / "results" / "logs" / "train" / (run.replace("/", "-") + ".log")).read_text()
    assert f"resuming from results/{run}/resume.pt after epoch {resumed}" in log, log
    trained = [int(e) for e in re.findall(rf"{name} epoch (\d+)/{epochs} lr=", log)]
    assert trained == list(range(resumed + 1, epochs + 1)), log
    history = pd.read_csv(workdir / "results" / run / "history.csv")
    assert list(history["epoch"]) == list(range(1, epochs + 1))
    assert not (workdir / "results" / run / "resume.pt").exists()


def test_job_failing_inside_slurm_fails_the_run_and_shows_its_log(cluster, tmp_path):
    """device: cuda passes validation but fails inside the job: this node has no GPU.

    One attempt (--retries 0): the profile's retries would only repeat the same failure, and
    the executor's status checks grow 10 s further apart with every check that sees no job
    complete, so each repetition costs more than the last. Retries are tested by the cancelled job.
    """
    workdir = slurm_workdir(tmp_path / "w")
    (workdir / "gpu.yaml").write_text(yaml.safe_dump({"device": "cuda"}))
    target = f"results/{FAILING_RUN}/metrics.json"
    proc = start_snakemake(cluster, workdir, target, *DEMO, "gpu.yaml", *PROFILE, "--retries", "0")
    output = finish(proc, workdir, timeout=600)
    assert proc.returncode != 0, output[-6000:]
    tries = [s for s in submissions(output, workdir) if s["rule"] == "train"]
    assert len(tries) == 1, output[-6000:]
    ledger = {r["JobId"]: r for r in cluster.completed_jobs()}
    assert all(ledger[s["id"]]["JobState"] == "FAILED" for s in tries), [ledger.get(s["id"]) for s in tries]
    # The failure is reported with the job's own log printed, then its SLURM log.
    log = f"results/logs/train/{FAILING_RUN.replace('/', '-')}.log"
    for attempt in tries:
        report = output[output.index(f"SLURM-job '{attempt['id']}' failed, SLURM status is: 'FAILED'"):]
        printed = re.search(rf"Logfile {re.escape(log)}:\n=+\n(.*?)\n=+\nLogfile {re.escape(str(attempt['log']))}:",
                            report, flags=re.S)
        assert printed, report[:6000]
        # One kdpipe: line naming the problem and what to do, no traceback.
        assert "kdpipe: the config asks for device: cuda, but no CUDA device is visible to this job" in printed[1]
        assert "Traceback" not in printed[1]
    assert not (workdir / target).exists()
