# Config validation and every input function. Nothing here computes results: the plan of
# runs comes from kdpipe.plan, and every rule calls the kdpipe command.
import json
import re

from snakemake.utils import validate

from kdpipe import plan

# Stops the run, naming the offending key, before any job starts.
validate(config, "../schemas/config.schema.yaml")

RESULTS = "results"
RUNS = plan.training_runs(config)  # {(family, run): run config}
CLASSIFY_PAIRS = plan.classify_pairs(config)
AE_DATA = plan.ae_data(config)
FAMILY_DATASETS = {family: config[family]["dataset"] for family in ("classify", "self_distill")}
FAMILY_DATASETS["autoencoder"] = AE_DATA["name"]
USED_DATASETS = sorted(set(FAMILY_DATASETS.values()))
# The autoencoder's data set, under the name of the step that prepares it from its source.
AE_SETS = {source: [AE_DATA["name"]] if AE_DATA["source"] == source else [] for source in ("synthetic", "pix2pix", "official")}
# A data set's `source` picks the job that prepares it; each preparing step matches only its own sets.
SYNTHETIC_SETS = [n for n, d in config["datasets"].items() if d["source"] == "synthetic"]
CIFAR_SETS = [n for n, d in config["datasets"].items() if d["source"] != "synthetic"]


def alternatives(names):
    """A wildcard regex matching exactly these names (and nothing when there are none)."""
    return "|".join(re.escape(n) for n in names) if names else "(?!)"


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


def family_outputs(family, name):
    """One file (model.pt, metrics.json, history.csv) of every run of a family."""
    return [f"{run_dir(cfg['dataset'], f, run)}/{name}" for (f, run), cfg in sorted(RUNS.items()) if f == family]


def training_benchmarks():
    return [f"{RESULTS}/benchmarks/train/{cfg['dataset']}-{f}-{run}.tsv" for (f, run), cfg in sorted(RUNS.items())]


def data_benchmarks():
    files = []
    for name in USED_DATASETS:
        if name == AE_DATA["name"]:
            source = AE_DATA["source"]
            if source == "pix2pix":
                files.append(f"{RESULTS}/benchmarks/download_pix2pix/{name}-{archive_name(name)}.tsv")
            step = {"synthetic": "prepare_street_scenes", "pix2pix": "prepare_pix2pix", "official": "prepare_cityscapes"}
            files.append(f"{RESULTS}/benchmarks/{step[source]}/{name}.tsv")
        elif name in SYNTHETIC_SETS:
            files.append(f"{RESULTS}/benchmarks/prepare_synthetic/{name}.tsv")
        else:
            files += [
                f"{RESULTS}/benchmarks/download_cifar/{name}-{archive_name(name)}.tsv",
                f"{RESULTS}/benchmarks/prepare_cifar/{name}.tsv",
            ]
    return files


def kd_figures():
    return [f"{RESULTS}/figures/kd-{p['id']}-{kind}.png" for p in CLASSIFY_PAIRS for kind in ("accuracy", "curves")]


SELF_DISTILL_FIGURES = [f"{RESULTS}/figures/self_distill-{kind}.png" for kind in ("cost", "curves")]
AE_VARIANTS = list(plan.ae_variants(config))
AE_FIGURES = [f"{RESULTS}/figures/autoencoder-{v}-{d}.png" for v in AE_VARIANTS for d in ("x2y", "y2x")] + [
    f"{RESULTS}/figures/autoencoder-losses.png"
]
