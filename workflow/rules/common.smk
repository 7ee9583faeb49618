# Config validation and every input function. Nothing here computes results: the plan of
# runs comes from kdpipe.plan, and every rule calls the kdpipe command.
import json
import re

from snakemake.utils import validate

from kdpipe import plan

# Stops the run, naming the offending key, before any job starts.
validate(config, "../schemas/config.schema.yaml")

RESULTS = "results"
CLASSIFY_RUNS = plan.classify_runs(config)
CLASSIFY_PAIRS = plan.classify_pairs(config)
CLASSIFY_DATASET = config["classify"]["dataset"]
# A data set's `source` picks the job that prepares it; each preparing step matches only its own sets.
SYNTHETIC_SETS = [n for n, d in config["datasets"].items() if d["source"] == "synthetic"]
CIFAR_SETS = [n for n, d in config["datasets"].items() if d["source"] != "synthetic"]


def alternatives(names):
    """A wildcard regex matching exactly these names (and nothing when there are none)."""
    return "|".join(re.escape(n) for n in names) if names else "(?!)"



def run_dir(dataset, family, run):
    return f"{RESULTS}/{dataset}/{family}/{run}"


def dataset_entry(wildcards):
    return plan.dataset_config(config, wildcards.dataset)


def raw_archive(wildcards):
    """The downloaded archive a CIFAR data set is prepared from."""
    entry = dataset_entry(wildcards)
    return f"data/raw/{wildcards.dataset}/{entry['url'].rsplit('/', 1)[-1]}"


def classify_run(wildcards):
    if wildcards.dataset != CLASSIFY_DATASET or wildcards.run not in CLASSIFY_RUNS:
        raise ValueError(
            f"no classifier run {wildcards.run!r} on {wildcards.dataset!r} in the config; "
            f"known runs: {', '.join(sorted(CLASSIFY_RUNS))}"
        )
    return CLASSIFY_RUNS[wildcards.run]


def classify_run_json(wildcards):
    return json.dumps(classify_run(wildcards), sort_keys=True)


def teacher_model(wildcards):
    teacher = classify_run(wildcards)["teacher_run"]
    return f"{run_dir(wildcards.dataset, 'classify', teacher)}/model.pt"


def classify_outputs(name):
    """One file (model.pt, metrics.json, history.csv) of every classifier run."""
    return [f"{run_dir(CLASSIFY_DATASET, 'classify', run)}/{name}" for run in sorted(CLASSIFY_RUNS)]


def classify_benchmarks():
    runs = sorted(CLASSIFY_RUNS)
    return [f"{RESULTS}/benchmarks/train_classifier/{CLASSIFY_DATASET}-{r}.tsv" for r in runs if not r.startswith("kd_")] + [
        f"{RESULTS}/benchmarks/distill_classifier/{CLASSIFY_DATASET}-{r}.tsv" for r in runs if r.startswith("kd_")
    ]


def data_benchmarks():
    entry = plan.dataset_config(config, CLASSIFY_DATASET)
    if entry["source"] == "synthetic":
        return [f"{RESULTS}/benchmarks/prepare_synthetic/{CLASSIFY_DATASET}.tsv"]
    archive = entry["url"].rsplit("/", 1)[-1]
    return [
        f"{RESULTS}/benchmarks/download_cifar/{CLASSIFY_DATASET}-{archive}.tsv",
        f"{RESULTS}/benchmarks/prepare_cifar/{CLASSIFY_DATASET}.tsv",
    ]


def kd_figures():
    return [f"{RESULTS}/figures/kd-{p['id']}-{kind}.png" for p in CLASSIFY_PAIRS for kind in ("accuracy", "curves")]
