# Config validation and every input function. Nothing here computes results: the plan of
# runs comes from kdpipe.plan, and every rule calls the kdpipe command.
import json
import os
import re

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from kdpipe import config_checks, dvc_sync, plan
from kdpipe.config_schema import schema_file

# First a budgeted walk: a config that YAML aliases expand past a size budget, or that holds a
# NaN or an infinity (which every schema range lets through), is refused naming the key, before
# the schema, whose message would print the whole expanded config.
try:
    config_checks.bounded_and_finite(config)
except config_checks.ConfigError as err:
    raise WorkflowError(f"Error in the config: {err}") from None

# Stops the run, naming the offending key, before any job starts. The schema file plus what the
# method registry generates (classify.methods, method_params): see kdpipe.config_schema.
with schema_file(os.path.join(workflow.basedir, "workflow", "schemas", "config.schema.yaml")) as merged_schema:
    validate(config, merged_schema)
# What the schema cannot say (duplicate pairs, a transfer set larger than its data set, ...).
try:
    config_checks.check_config(config)
except config_checks.ConfigError as err:
    raise WorkflowError(f"Error in the config: {err}") from None

# Device settings every training job reads (KDPIPE_JOBS_PER_GPU): refused now, not when a job starts.
from kdpipe import devices

try:
    devices.check_environment()
except devices.DeviceError as err:
    raise WorkflowError(f"Error in the environment: {err}") from None

# Right after `dvc pull`, every file carries the pull's time and Snakemake has no record of what
# made it: it could retrain what exists or trust what is stale. Refuse to guess.
if dvc_sync.pulled_without_records("."):
    raise WorkflowError(
        "outputs pulled by DVC are here, but Snakemake has no record of them: run `kdpipe dvc-sync` first "
        "(it marks up to date what dvc.lock says belongs to this code and these parameters)"
    )

RESULTS = "results"
# runtime (minutes) and mem_mb per kind of job, for cluster schedulers (profiles/slurm).
RESOURCES = config["resources"]
RUNS = plan.training_runs(config)  # {(family, run): run config}
CLASSIFY_PAIRS = plan.classify_pairs(config)
# Sweeps (classify.sweeps): each one's point and reference runs; the runs only sweeps train.
SWEEPS = plan.sweeps(config)
SWEEP_RUNS = plan.sweep_runs(config)
SWEEP_ONLY_RUNS = plan.sweep_only_runs(config)
AE_DATA = plan.ae_data(config)
USED_DATASETS = plan.used_datasets(config)
# Published teachers (classify.published_teachers): the sources imported from, and the teacher runs
# made by the import_teacher rule instead of train (the train rule's `run` wildcard excludes them).
TEACHER_SOURCES = plan.used_teacher_sources(config)
IMPORTED_RUNS = sorted(run for (family, run), cfg in RUNS.items() if "import" in cfg)
# The autoencoder's data set, under the name of the step that prepares it from its source.
AE_SETS = {source: [AE_DATA["name"]] if AE_DATA["source"] == source else [] for source in ("synthetic", "pix2pix", "official")}
# A data set's `source` picks the job that prepares it; each preparing step matches only its own sets.
SYNTHETIC_SETS = [n for n, d in config["datasets"].items() if d["source"] == "synthetic"]
CIFAR_SETS = [n for n, d in config["datasets"].items() if d["source"] != "synthetic"]


def alternatives(names):
    """A wildcard regex matching exactly these names (and nothing when there are none)."""
    return "|".join(re.escape(n) for n in names) if names else "(?!)"


def any_but(names):
    """A wildcard regex matching one path component that is none of these names."""
    return f"(?!(?:{alternatives(names)})/)[^/]+" if names else "[^/]+"


def dataset_entry(wildcards):
    return plan.dataset_config(config, wildcards.dataset)


def archive_name(dataset):
    """Where a downloaded archive is kept: named by its source, whatever a mirror's URL looks like."""
    if dataset == AE_DATA["name"]:
        return plan.ARCHIVE_NAMES["pix2pix"]
    return plan.ARCHIVE_NAMES[plan.dataset_config(config, dataset)["source"]]


def raw_archive(wildcards):
    """The downloaded archive a CIFAR data set is prepared from."""
    return f"data/raw/{wildcards.dataset}/{archive_name(wildcards.dataset)}"


def run_config(wildcards):
    key = (wildcards.family, wildcards.run)
    if key not in RUNS or RUNS[key]["dataset"] != wildcards.dataset:
        known = ", ".join(f"{RUNS[k]['dataset']}/{k[0]}/{k[1]}" for k in sorted(RUNS))
        raise ValueError(f"no run {wildcards.dataset}/{wildcards.family}/{wildcards.run} in the config; known: {known}")
    return RUNS[key]


def run_config_json(wildcards):
    return json.dumps(run_config(wildcards), sort_keys=True)


def run_dir(dataset, family, run):
    return f"{RESULTS}/{dataset}/{family}/{run}"


def training_inputs(wildcards):
    """Prepared data, and the teacher's model.pt for a distilled student (an explicit input)."""
    cfg = run_config(wildcards)
    teacher = cfg.get("teacher_run")
    return {
        "train": f"data/prepared/{cfg['dataset']}/train.pt",
        "test": f"data/prepared/{cfg['dataset']}/test.pt",
        "teacher": [f"{run_dir(cfg['dataset'], wildcards.family, teacher)}/model.pt"] if teacher else [],
    }


def imported_inputs(wildcards):
    """The source's archive and the prepared data (the test set it is evaluated on, the training
    set whose channel statistics normalise it, as for a trained teacher)."""
    cfg = run_config(wildcards)
    return {
        "archive": plan.teacher_archive(cfg["import"]["source"]),
        "train": f"data/prepared/{cfg['dataset']}/train.pt",
        "test": f"data/prepared/{cfg['dataset']}/test.pt",
    }


def family_outputs(family, name, sweep_points=False):
    """One file (model.pt, metrics.json, history.csv) of every run of a family; the runs only sweeps
    train (classify.sweeps) with ``sweep_points``, since only the sweep tables read them."""
    return [f"{run_dir(cfg['dataset'], f, run)}/{name}" for (f, run), cfg in sorted(RUNS.items())
            if f == family and (sweep_points or run not in SWEEP_ONLY_RUNS)]


def family_targets(family):
    """Every output of every run of a family (sweep points included)."""
    return [f for name in ("model.pt", "metrics.json", "history.csv")
            for f in family_outputs(family, name, sweep_points=True)]


def training_benchmarks():
    return [plan.benchmark_path(plan.train_rule(cfg), plan.train_job(cfg["dataset"], f, run))
            for (f, run), cfg in sorted(RUNS.items())]


def data_benchmarks():
    return [plan.benchmark_path(rule, job) for name in USED_DATASETS for rule, job in plan.data_jobs(config, name)] + [
        plan.benchmark_path("download_teachers", source) for source in TEACHER_SOURCES
    ]


def kd_figures():
    return [f"{RESULTS}/figures/kd-{p['id']}-{kind}.png" for p in CLASSIFY_PAIRS for kind in ("accuracy", "curves")]


def sweep_metrics(runs):
    """The metrics.json of these classifier runs (a sweep's points or its reference)."""
    dataset = config["classify"]["dataset"]
    return [f"{run_dir(dataset, 'classify', run)}/metrics.json" for run in runs]


def sweep_table(name):
    return f"{RESULTS}/tables/sweep_{name}.csv"


def sweep_figure(name):
    return f"{RESULTS}/figures/sweep_{name}.png"


SELF_DISTILL_FIGURES = [f"{RESULTS}/figures/self_distill-{kind}.png" for kind in ("cost", "curves")]
AE_VARIANTS = list(plan.ae_variants(config))
AE_FIGURES = [f"{RESULTS}/figures/autoencoder-{v}-{d}.png" for v in AE_VARIANTS for d in ("x2y", "y2x")] + [
    f"{RESULTS}/figures/autoencoder-losses.png"
]


# ---- No table, figure or report outlives a run it was made from (kdpipe.stale) ----
# Snakemake alone keeps them when a run they were made from is missing (a failed, killed or
# deleted run); removed, they are rebuilt, and the missing run with them. The Snakefile calls
# sweep_stale_results() after its includes (before Snakemake plans) and in its onerror handler.
import sys

from kdpipe import stale


def aggregate_products():
    """{output: its inputs under results/} of every rule without wildcards that writes under results/."""
    products = {}
    for r in workflow.rules:
        outputs = [str(f) for f in r.output]
        if r.has_wildcards() or not outputs or not all(stale.under_results(f) for f in outputs):
            continue
        if any(callable(f) for f in r.input):
            raise WorkflowError(f"{r.name}: the stale-results sweep (kdpipe.stale) needs plain input paths")
        inputs = [str(f) for f in r.input if stale.under_results(str(f))]
        products.update({out: inputs for out in outputs})
    return products


def sweep_stale_results(after_failure=False):
    if not workflow.is_main_process or os.environ.get(dvc_sync.SYNCING_ENV):
        return  # a job's own Snakemake (cluster, group), or dvc-sync's --touch run: the main run decides
    root = os.getcwd()  # Snakemake's working directory: every path of a rule is relative to it
    if after_failure:  # this run holds the lock; Snakemake calls onerror only after jobs ran (never -n)
        remove, note = not workflow.touch, ""
    elif stale.locked(root):
        remove, note = False, " (nothing removed now: another Snakemake holds .snakemake/locks here)"
    else:
        remove, note = stale.runs_jobs(sys.argv), " (nothing removed: this command runs no job)"
    _, refused = stale.sweep(root, aggregate_products(), remove=remove, note=note)
    if refused and not after_failure:  # rebuilt around a stale file, the report would claim to be current
        raise WorkflowError(f"stale results not removed (see the kdpipe: lines above): {', '.join(refused)}")
