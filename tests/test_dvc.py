"""DVC: the tiny preset built with Snakemake, recorded, pushed to a local remote, pulled into a
fresh clone and rebuilt without training; a parameter change through Snakemake and `dvc exp run`;
a corrupted remote; `dvc repro` from an empty checkout; dvc.yaml against the workflow.

Plumbing, not learning: the tiny preset (presets/tiny.yaml over the demo) makes every file the demo
makes, with one seed and one or two epochs, so the round trips cost seconds per build."""

import hashlib
import io
import json
import os
import re
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml

from workflow_copy import ROOT, copy_built, git, planned_jobs, snakemake

pytestmark = pytest.mark.pipeline
PRESETS = ["presets/demo.yaml", "presets/tiny.yaml"]
TINY = ["--configfile", *PRESETS]
TABLES = ["kd_runs.csv", "kd_summary.csv", "self_distill_runs.csv", "self_distill_summary.csv",
          "autoencoder_runs.csv", "autoencoder_summary.csv", "jobs.csv", "kd_metrics.json",
          "self_distill_metrics.json", "autoencoder_metrics.json", "reproduction.csv", "reproduction_metrics.json"]


def run(workdir: Path, *cmd: str, check: bool = True, timeout: int = 1800) -> subprocess.CompletedProcess:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "DVC_NO_ANALYTICS": "1"}
    proc = subprocess.run(cmd, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=timeout, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-6000:]}")
    return proc


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def tracked_files(workdir: Path) -> dict[str, str]:
    """Every file under data/ and results/ (what DVC versions), by relative path, with its md5."""
    return {str(p.relative_to(workdir)): md5(p) for top in ("data", "results") for p in (workdir / top).rglob("*")
            if p.is_file() and p.name != ".gitignore"}


def classify_runs(work: Path, prefix: str = "") -> set[str]:
    """The classifier runs a build made (run folder names), those starting with ``prefix``."""
    return {d.name for d in (work / "results/synthetic10/classify").iterdir() if d.name.startswith(prefix)}


def retrained(work: Path, overlay: Path) -> set[str]:
    """The classifier runs ``overlay`` changes or adds (own runs and sweep points alike): what
    Snakemake must train after the change, by the plan of both configs."""
    from kdpipe import dvc_stages, plan

    before, _ = dvc_stages.load_config(work, PRESETS)
    after, _ = dvc_stages.load_config(work, [*PRESETS, str(overlay)])
    old = plan.classify_runs(before)
    return {name for name, cfg in plan.classify_runs(after).items() if old.get(name) != cfg}


def clone(origin: Path, dest: Path) -> Path:
    run(origin.parent, "git", "clone", "-q", str(origin), str(dest))
    return dest


@pytest.fixture(scope="module")
def origin(built_tiny, tmp_path_factory):
    """The tiny preset built with Snakemake, recorded with `dvc commit` and pushed to a local folder remote."""
    base = tmp_path_factory.mktemp("dvc")
    work = copy_built(built_tiny, base / "origin")
    run(work, "kdpipe", "dvc-yaml", "--configfile", *PRESETS)
    run(work, "dvc", "commit", "--force", "--quiet")
    run(work, "dvc", "remote", "add", "--default", "storage", str(base / "remote"))
    run(work, "dvc", "remote", "modify", "storage", "verify", "true")
    git(work, "add", "-A")
    git(work, "commit", "-qm", "demo results recorded by DVC")
    run(work, "dvc", "push")
    return work


@pytest.fixture(scope="module")
def pulled(origin, tmp_path_factory):
    """A fresh clone of the origin, `dvc pull`ed and synced, the report rebuilt with Snakemake."""
    work = clone(origin, tmp_path_factory.mktemp("pulled") / "clone")
    assert not (work / "results").exists()
    run(work, "dvc", "pull")
    sync = run(work, "kdpipe", "dvc-sync")
    dry = snakemake(work, "-n", "results/report.pdf", *TINY)
    rebuild = snakemake(work, "results/report.pdf", "--cores", "2", *TINY)
    return {"work": work, "sync": sync.stdout, "dry": dry.stdout, "rebuild": rebuild.stdout}


def test_recorded_workspace_matches_dvc_lock(origin):
    assert json.loads(run(origin, "dvc", "status", "--json").stdout.strip().splitlines()[-1]) == {}
    lock = yaml.safe_load((origin / "dvc.lock").read_text())["stages"]
    assert set(lock) == set(yaml.safe_load((origin / "dvc.yaml").read_text())["stages"])
    # Each stage records its parameters by key, from the file that sets them.
    assert lock["classify"]["params"]["presets/demo.yaml"]["classify"]["method_params"]["kd_soft"]["temperature"] == 2
    assert "config.yaml" in lock["classify"]["params"]


def test_every_output_of_the_run_is_versioned(origin):
    """Everything the Snakemake run wrote under data/ and results/ belongs to exactly one DVC stage."""
    stages = yaml.safe_load((origin / "dvc.yaml").read_text())["stages"]
    outs = [next(iter(o)) for s in stages.values() for o in s["outs"]]
    for path in tracked_files(origin):
        owners = [o for o in outs if path == o or path.startswith(o + "/")]
        assert len(owners) == 1, (path, owners)


def test_pull_rebuilds_the_report_without_training(origin, pulled):
    assert "up to date (match dvc.lock)" in pulled["sync"] and "out of date" not in pulled["sync"]
    assert "Nothing to be done" in pulled["dry"], pulled["dry"][-3000:]
    assert "rule train" not in pulled["rebuild"]
    work = pulled["work"]
    for name in TABLES:
        assert (work / "results/tables" / name).read_bytes() == (origin / "results/tables" / name).read_bytes(), name
    assert md5(work / "results/report.pdf") == md5(origin / "results/report.pdf")
    assert tracked_files(work) == tracked_files(origin)
    repro = run(work, "dvc", "repro")
    assert "Running stage" not in repro.stdout, repro.stdout


def test_snakemake_refuses_pulled_files_until_synced(origin, tmp_path):
    """Right after a pull Snakemake has no records and pulled times: it refuses rather than guess.
    After the sync it sees the old parameters, so a temperature change plans just its two students."""
    work = clone(origin, tmp_path / "clone")
    run(work, "dvc", "pull")
    hotter = work / "hotter.yaml"
    hotter.write_text(yaml.safe_dump({"classify": {"method_params": {"kd_soft": {"temperature": 3.0}}}}))
    proc = snakemake(work, "-n", "results/report.pdf", *TINY, str(hotter), check=False)
    assert proc.returncode != 0 and "run `kdpipe dvc-sync` first" in proc.stdout
    run(work, "kdpipe", "dvc-sync")
    proc = snakemake(work, "-n", "results/report.pdf", *TINY, str(hotter))
    # kd_soft's own runs, and the sweep points that read its temperature (T = 2 is no longer the own
    # run's value, so it becomes a point of its own; the transfer-set points train at T = 3)
    hot = retrained(work, hotter)
    assert {run.split("-resnet8")[0] for run in hot} == {"kd_soft"} and "kd_soft-resnet8-from-resnet14-s0" in hot
    assert "kd_soft-resnet8-from-resnet14-temperature2-s0" in hot and len(hot) == 3
    sweeps = {f"{kind}_sweep_{name}": 1 for kind in ("tables", "figures") for name in ("temperature", "transfer_set")}
    assert planned_jobs(proc.stdout) == {"train": len(hot), "tables_kd": 1, "tables_jobs": 1, "tables_reproduction": 1,
                                         "figures_kd": 1, "report": 1, **sweeps}


def test_sync_never_trusts_outputs_of_other_parameters(origin, tmp_path):
    """Pulled results made with another temperature than the checkout's: the classify stage and every
    stage after it are out of date; their outputs are removed and Snakemake rebuilds them."""
    work = clone(origin, tmp_path / "clone")
    run(work, "dvc", "pull")
    preset = work / "presets/demo.yaml"
    preset.write_text(preset.read_text().replace("temperature: 2", "temperature: 3"))
    out = run(work, "kdpipe", "dvc-sync").stdout
    assert "out of date" in out and "classify" in out
    assert not (work / "results/synthetic10/classify").exists() and not (work / "results/report.pdf").exists()
    assert (work / "results/synthetic10/self_distill").exists()
    jobs = planned_jobs(snakemake(work, "-n", "results/report.pdf", *TINY).stdout)
    # the classify family, nothing before it: every run of the changed config (its T = 2 sweep point is
    # now a run of its own, no longer kd_soft's own run)
    from kdpipe import dvc_stages, plan

    changed = plan.classify_runs(dvc_stages.load_config(work, PRESETS)[0])
    assert jobs["train"] == len(changed) == len(classify_runs(origin)) + 1 and "prepare_synthetic" not in jobs


def test_metrics_and_plots(pulled):
    work = pulled["work"]
    shown = run(work, "dvc", "metrics", "show", "--json").stdout
    metrics = json.loads(shown[shown.index("{"):])
    data = next(iter(metrics.values()))["data"]
    kd = data["results/tables/kd_metrics.json"]["data"]
    summary = pd.read_csv(work / "results/tables/kd_summary.csv").set_index("method")
    assert kd["resnet14-to-resnet8"]["kd_soft"]["best_top1"]["mean"] == pytest.approx(summary.loc["kd_soft", "best_top1_mean"])
    assert "e1d4_maxpool" in data["results/tables/autoencoder_metrics.json"]["data"]
    table = run(work, "dvc", "metrics", "show").stdout
    assert "kd_metrics.json" in table and "best_top1.mean" in table
    out = work / "plots"
    run(work, "dvc", "plots", "show", "--out", str(out))
    html = (out / "index.html").read_text()
    for title in ("classify: test top1", "self_distill: training loss", "autoencoder: test miou"):
        assert title in html


def test_parameter_change_reruns_only_what_depends_on_it(pulled):
    """After the round trip: `dvc exp run -S` retrains exactly the KD-soft students, and shows the experiment."""
    work = pulled["work"]
    classify = work / "results/synthetic10/classify"
    before = {d.name: md5(d / "metrics.json") for d in classify.iterdir()}
    others = {p: md5(p) for p in (work / "results").glob("*/*/*/metrics.json") if "classify" not in p.parts}
    hotter = work.parent / "hotter.yaml"  # the same change as an overlay, outside the repository
    hotter.write_text(yaml.safe_dump({"classify": {"method_params": {"kd_soft": {"temperature": 3}}}}))
    expected = retrained(work, hotter)
    proc = run(work, "dvc", "exp", "run", "-n", "hotter", "-S", "presets/demo.yaml:classify.method_params.kd_soft.temperature=3")
    ran = {line.split("'")[1] for line in proc.stdout.splitlines() if line.startswith("Running stage")}
    assert ran == {"classify", "tables", "figures", "report"}, proc.stdout[-4000:]
    # Exactly the runs the change reaches: kd_soft's own, and the sweep points that read its temperature.
    changed = {d.name for d in classify.iterdir() if before.get(d.name) != md5(d / "metrics.json")}
    assert changed == expected and classify_runs(work, "kd_soft-") >= changed
    assert len(re.findall(r"^(?:local)?rule train:", proc.stdout, flags=re.M)) == len(changed), proc.stdout[-4000:]
    assert {p: md5(p) for p in others} == others
    table = pd.read_csv(io.StringIO(run(work, "dvc", "exp", "show", "--no-pager", "--csv").stdout))
    column = "presets/demo.yaml:classify.method_params.kd_soft.temperature"
    assert table.loc[table["Experiment"] == "hotter", column].tolist() == [3]
    assert table.loc[table["rev"].isin(["main", "master"]), column].tolist() == [2]
    metric = "resnet14-to-resnet8.kd_soft.best_top1.mean"
    hot = json.loads((classify / "kd_soft-resnet8-from-resnet14-s0/metrics.json").read_text())
    assert hot["config"]["method_params"]["temperature"] == 3
    assert table.loc[table["Experiment"] == "hotter", metric].iloc[0] == pytest.approx(
        json.loads((work / "results/tables/kd_metrics.json").read_text())["resnet14-to-resnet8"]["kd_soft"]["best_top1"]["mean"])


def test_corrupted_remote_file_is_caught(origin, tmp_path):
    model = origin / "results/synthetic10/classify/teacher-resnet14-s0/model.pt"
    digest = md5(model)
    remote = Path(run(origin, "dvc", "remote", "list").stdout.split()[1])
    obj = remote / "files" / "md5" / digest[:2] / digest[2:]
    assert obj.exists()
    original = obj.read_bytes()
    try:
        obj.write_bytes(original[: len(original) // 2] + b"corrupted" + original[len(original) // 2 + 9:])
        work = clone(origin, tmp_path / "clone")
        proc = run(work, "dvc", "pull", check=False)
        assert proc.returncode != 0
        # `verify` re-hashes what is fetched: the damaged object is dropped, its output not checked out.
        assert "Checkout failed" in proc.stdout and "results/synthetic10/classify" in proc.stdout, proc.stdout[-3000:]
        reference = tracked_files(origin)
        for path, got in tracked_files(work).items():
            assert got == reference[path], f"{path} differs from what was pushed"
        assert not (work / model.relative_to(origin)).exists()
        # The rest is usable: the sync says what is missing, and Snakemake retrains just that family.
        assert "incomplete here" in run(work, "kdpipe", "dvc-sync").stdout
        assert planned_jobs(snakemake(work, "-n", "classify", *TINY).stdout) == {"train": len(classify_runs(origin)), "classify": 1}
    finally:
        obj.chmod(0o644)
        obj.write_bytes(original)


def test_dvc_repro_from_empty_checkout_builds_what_snakemake_built(origin, tmp_path):
    work = clone(origin, tmp_path / "clone")
    proc = run(work, "dvc", "repro", timeout=2400)
    assert "Running stage 'classify'" in proc.stdout
    for name in ("kd_summary.csv", "self_distill_summary.csv", "autoencoder_summary.csv", "kd_metrics.json",
                 "self_distill_metrics.json", "autoencoder_metrics.json", "kd_runs.csv"):
        built, reference = work / "results/tables" / name, origin / "results/tables" / name
        if name.endswith(".json"):
            assert json.loads(built.read_text()) == json.loads(reference.read_text()), name
        else:
            a, b = pd.read_csv(built), pd.read_csv(reference)
            # Times, and what is computed from them (cost in device-hours, gain per hour), differ between builds.
            numbers = [c for c in a.columns if c != "git_commit"
                       and not any(k in c for k in ("wall", "time", "seconds", "cost", "per_h"))]
            pd.testing.assert_frame_equal(a[numbers], b[numbers], check_exact=False, rtol=1e-6)
    assert json.loads(run(work, "dvc", "status", "--json").stdout.strip().splitlines()[-1]) == {}


def test_dvc_yaml_is_generated_from_the_workflow():
    """The committed dvc.yaml is exactly what `kdpipe dvc-yaml` writes for config.yaml today."""
    run(ROOT, "kdpipe", "dvc-yaml", "--check")


def test_a_training_stage_depends_on_its_own_family_only():
    """kdpipe.training.run's dispatch table imports every family (each when it runs): a stage's code is
    its own family's and what that imports (self-distillation builds on the classifier), not the others'."""
    from kdpipe.dvc_stages import ENTRY_MODULES, code_deps, other_families

    src = ROOT / "src"
    family = {"classify": "src/kdpipe/training/classify.py", "self_distill": "src/kdpipe/training/self_distill.py",
              "autoencoder": "src/kdpipe/training/ae_pair.py"}
    deps = {k: set(code_deps(src, ENTRY_MODULES[k], other_families(k))) for k in family}
    assert {k: {f for f in family.values() if f in d} for k, d in deps.items()} == {
        "classify": {family["classify"]}, "self_distill": {family["self_distill"], family["classify"]},
        "autoencoder": {family["autoencoder"]}}
    assert all("src/kdpipe/training/run.py" in d for d in deps.values())
    assert set(family.values()) <= set(code_deps(src, ["kdpipe.training.run"]))  # unfiltered: run names them all


def dry_run_jobs(text: str) -> list[dict]:
    """Each job of `snakemake -n` as {"rule", "input", "output", "log", "benchmark"} (lists of paths)."""
    jobs, job = [], None
    for line in text.splitlines():
        if line.startswith(("rule ", "localrule ")) and line.endswith(":"):
            job = {"rule": line.split()[1].rstrip(":"), "input": [], "output": [], "log": [], "benchmark": []}
            jobs.append(job)
        elif job is not None and line.startswith("    ") and ":" in line:
            key, _, value = line.strip().partition(": ")
            if key in ("input", "output", "log", "benchmark"):
                job[key] = [v.strip() for v in value.split(",") if v.strip()]
        elif not line.startswith("    "):
            job = None
    return jobs


@pytest.mark.parametrize("overlay", [[], ["presets/demo.yaml"], ["presets/published-teachers.yaml"]],
                         ids=["paper", "demo", "published-teachers"])
def test_dvc_stages_cover_the_workflow(overlay):
    """Checked on Snakemake's own DAG: every output, log and benchmark of every job belongs to exactly
    one stage; every input a job reads is made in that stage or is one of its dependencies; every
    stage output is made by some job. With published teachers (a dry run: nothing is downloaded) the
    archive's download and the imports are jobs too."""
    from kdpipe.dvc_stages import dvc_pipeline

    stages = dvc_pipeline(ROOT, overlay)["stages"]
    outs = {n: [next(iter(o)) for o in s["outs"]] for n, s in stages.items()}
    args = [a for f in overlay for a in ("--configfile", f)]
    jobs = dry_run_jobs(snakemake(ROOT, "-n", "--forceall", "results/report.pdf", *args).stdout)
    assert len([j for j in jobs if j["rule"] == "train"]) >= 20
    imports = overlay == ["presets/published-teachers.yaml"]
    assert ({"download_teachers", "import_teacher"} <= {j["rule"] for j in jobs}) == imports

    def under(path, roots):
        return any(path == r or path.startswith(r + "/") for r in roots)

    made = set()
    for job in jobs:
        files = job["output"] + job["log"] + job["benchmark"]
        if not files:
            continue  # a target rule
        owners = {n for f in files for n in stages if under(f, outs[n])}
        assert len(owners) == 1 and all(any(under(f, outs[n]) for n in owners) for f in files), (job, owners)
        stage = owners.pop()
        made.update(files)
        for path in job["input"]:
            assert under(path, outs[stage]) or under(path, stages[stage]["deps"]), (job["rule"], path, stage)
    for name, paths in outs.items():
        for out in paths:
            assert any(under(f, [out]) for f in made), f"stage {name} lists {out}, which no job makes"
