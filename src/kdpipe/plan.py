"""What the pipeline trains, derived from the validated config: run names and run configs.

A run's name says what distinguishes it (role or method, architecture, teacher, seed), so a
Snakemake wildcard is a word a person can read. A run's config holds exactly what that run
depends on, so changing one student's temperature changes that student's config and nothing
else's (Snakemake reruns a job whose params changed).
"""

from kdpipe import methods
from kdpipe.data.sources import CIFAR as CIFAR_SOURCES
from kdpipe.training.settings import run_train_block

# Labels of the multi-exit family's methods; the classifier's methods are in kdpipe.methods.
METHOD_LABELS = {
    "self_distill": "self-distillation",
    "baseline": "baseline (last exit only)",
    "deep_supervision": "deep supervision (CE at every exit)",
}
PIX2PIX_URL = "http://efrosgans.eecs.berkeley.edu/pix2pix/datasets/cityscapes.tar.gz"
# Downloaded archives are stored under these names, whatever the (mirror's) URL looks like.
ARCHIVE_NAMES = {"cifar10": "cifar-10-python.tar.gz", "cifar100": "cifar-100-python.tar.gz",
                 "pix2pix": "cityscapes.tar.gz"}
SELF_DISTILL_METHODS = ("self_distill", "baseline", "deep_supervision")
# What BYOT (self_distill) is read against, paired by seed, at every exit both trained: the plain
# network, and the control that separates self-distillation from a label loss at every exit.
SELF_DISTILL_REFERENCES = ("baseline", "deep_supervision")
# Archives of published teacher checkpoints (``teacher_sources``), one per source, named by it.
TEACHER_ARCHIVES = "data/raw/published_teachers"


def pair_id(teacher: str, student: str) -> str:
    return f"{teacher}-to-{student}"


def teacher_run(arch: str, seed: int) -> str:
    return f"teacher-{arch}-s{seed}"


def student_run(method: str, arch: str, teacher: str | None, seed: int) -> str:
    """A method without a teacher (alone, mutual learning) runs once per architecture and seed."""
    if not methods.get(method).needs_teacher:
        return f"{method}-{arch}-s{seed}"
    return f"{method}-{arch}-from-{teacher}-s{seed}"


def dataset_config(config: dict, name: str) -> dict:
    """A data set's entry, with the official CIFAR URL and md5 filled in when not given."""
    try:
        entry = dict(config["datasets"][name])
    except KeyError:
        raise KeyError(f"data set {name!r} is not defined under 'datasets' in the config") from None
    if entry["source"] in CIFAR_SOURCES:
        entry.setdefault("url", CIFAR_SOURCES[entry["source"]]["url"])
        entry.setdefault("md5", CIFAR_SOURCES[entry["source"]]["md5"])
    return entry


def teacher_archive(source: str) -> str:
    """Where a teacher source's archive is downloaded to (or placed by hand)."""
    return f"{TEACHER_ARCHIVES}/{source}.tar"


def imported_teacher(config: dict, arch: str) -> dict | None:
    """Where a teacher of ``arch`` comes from when ``classify.published_teachers`` names a source
    for it: the source's name, URL and the checkpoint's exact member path; ``None`` when trained."""
    source = (config["classify"].get("published_teachers") or {}).get(arch)
    if source is None:
        return None
    entry = config["teacher_sources"][source]
    return {"source": source, "url": entry["url"], "member": entry["member"].replace("{arch}", arch)}


def used_teacher_sources(config: dict) -> list[str]:
    """The teacher sources some run imports from (each one's archive is downloaded once)."""
    return sorted({cfg["import"]["source"] for cfg in classify_runs(config).values() if "import" in cfg})


def train_rule(run: dict) -> str:
    """The rule that makes a run's outputs: an imported teacher is evaluated, not trained."""
    return "import_teacher" if "import" in run else "train"


def classify_pairs(config: dict) -> list[dict]:
    """Each teacher→student pair with every listed method's settings resolved: the registry's
    defaults, then ``classify.method_params``, then the pair's own ``method_params``."""
    c = config["classify"]
    pairs = []
    for p in c["pairs"]:
        params = {m: methods.resolve_params(m, c.get("method_params"), p.get("method_params")) for m in c["methods"]}
        pairs.append({"id": pair_id(p["teacher"], p["student"]), "teacher": p["teacher"], "student": p["student"],
                      "method_params": params})
    return pairs


def classify_runs(config: dict, sweep_points: bool = True) -> dict[str, dict]:
    """Every classifier run as ``{name: run_config}``; runs shared by pairs appear once. Without
    ``sweep_points``, the config's own runs only (what the KD tables and figures read).

    A student run's config holds its method's resolved settings (``method_params``) and nothing of
    the other methods', so changing one method's setting reruns only that method's students.
    """
    c = config["classify"]
    source = dataset_config(config, c["dataset"])["source"]
    common = {"family": "classify", "dataset": c["dataset"], "dataset_source": source,
              "device": config["device"], "augment": c["augment"]}
    taught = any(methods.get(m).needs_teacher for m in c["methods"])
    runs: dict[str, dict] = {}
    for seed in c["seeds"]:
        for pair in classify_pairs(config):
            if taught:
                name = teacher_run(pair["teacher"], seed)
                runs[name] = {**common, "run": name, "role": "teacher", "method": "teacher", "arch": pair["teacher"],
                              "seed": seed, "train": c["teacher_train"], "train_subset": None}
                imported = imported_teacher(config, pair["teacher"])
                if imported:  # the source's own recipe: changing teacher_train must not re-import it
                    runs[name].update({"train": config["teacher_sources"][imported["source"]]["recipe"],
                                       "import": imported})
            for method in c["methods"]:
                run = _student(common, c, pair, method, seed)
                runs[run["run"]] = run
    if not sweep_points:
        return runs
    # Sweep points (classify.sweeps): ordinary student runs with one setting changed. A point equal
    # to the config's own run is that run (same name, same config), and a point two sweeps share is
    # one run: the dict keeps one entry per name, so nothing trains twice.
    for sweep in sweeps(config).values():
        # the reference (the student alone) is trained even when classify.methods lacks it
        for run in [*sweep_point_runs(config, common, sweep), *sweep_reference_runs(config, common, sweep)]:
            runs.setdefault(run["run"], run)
    return runs


def _student(common: dict, c: dict, pair: dict, method: str, seed: int, sweep: dict | None = None,
             value=None) -> dict:
    """A student run of ``method`` for ``pair`` and ``seed``; with ``sweep``, at the swept ``value``
    (named after it unless the value is the config's own)."""
    m = methods.get(method)
    run = {**common, "role": "student", "arch": pair["student"], "seed": seed, "train": c["student_train"],
           "train_subset": c["train_subset"], "method": method}
    if m.params:
        run["method_params"] = dict(pair["method_params"][method])
    if m.needs_teacher:
        run.update(teacher=pair["teacher"], teacher_run=teacher_run(pair["teacher"], seed))
    suffix = ""
    if sweep is not None:
        if sweep["key"] == TRANSFER_SET:
            own = run["train_subset"] == value
            run["train_subset"] = value
        else:
            own = run["method_params"][sweep["key"]] == value
            run["method_params"][sweep["key"]] = value
        suffix = "" if own else f"-{sweep['word']}{value_word(value)}"
    base = student_run(method, pair["student"], pair["teacher"], seed)
    run["run"] = base[: -len(f"-s{seed}")] + f"{suffix}-s{seed}"
    return run


# ---- Sweeps (classify.sweeps): one setting across values, the curves distillation papers draw ----
# Snakemake's Paramspace is the workflow catalog's tool for grids of parameters; it is not used here
# because a point is not a new kind of job but a classify run like any other (the same rule, run
# config and checkpoints), and its name must fold into the config's own run when the value is the
# config's: a Paramspace pattern (`temperature~4/...`) would name that run twice. A sweep is one axis,
# so the grid is a list of values, expanded here with the rest of the plan.
TRANSFER_SET = "train_subset"
SWEEP_WORDS = {TRANSFER_SET: "subset"}  # a run name's word for the swept value: kd_soft-...-subset500-s0


def value_word(value) -> str:
    """A swept value as run-name characters (letters, digits, '_' and '-'): 4, 0p5, 1em05."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return format(value, "g").replace(".", "p").replace("-", "m").replace("+", "")


def sweeps(config: dict) -> dict[str, dict]:
    """Each sweep of ``classify.sweeps`` resolved: its setting split into method and key, the methods
    whose lines it draws (a setting's own method; for the transfer set every listed method), the
    reference (the student alone, which reads no method setting), and its run-name word."""
    c = config["classify"]
    out = {}
    for name, entry in (c.get("sweeps") or {}).items():
        setting = entry["setting"]
        if setting == TRANSFER_SET:
            method, key = None, TRANSFER_SET
            lines = list(entry.get("methods") or c["methods"])
        else:
            method, key = setting.split(".", 1)
            lines = [method]
        reference = [] if method is None or method == methods.BASELINE else [methods.BASELINE]
        out[name] = {"name": name, "setting": setting, "method": method, "key": key, "values": list(entry["values"]),
                     "lines": lines, "reference": reference, "word": SWEEP_WORDS.get(key, key)}
    return out


def sweep_point_runs(config: dict, common: dict, sweep: dict) -> list[dict]:
    """Every run a sweep draws a point from, for every pair and seed of the config."""
    c, pairs = config["classify"], classify_pairs(config)
    return [_student(common, c, pair, method, seed, sweep, value)
            for seed in c["seeds"] for pair in pairs for method in sweep["lines"] for value in sweep["values"]]


def sweep_reference_runs(config: dict, common: dict, sweep: dict) -> list[dict]:
    """The runs of a sweep's reference (the config's own runs of the student alone), every pair and seed."""
    c, pairs = config["classify"], classify_pairs(config)
    return [_student(common, c, pair, m, seed) for seed in c["seeds"] for pair in pairs for m in sweep["reference"]]


def sweep_runs(config: dict) -> dict[str, dict[str, list[str]]]:
    """Per sweep, the run names of its points and of its reference (each name once, in plan order)."""
    common = {"family": "classify", "device": config["device"]}  # names only: the rest of a run config is not read
    return {name: {part: list(dict.fromkeys(run["run"] for run in runs(config, common, sweep)))
                   for part, runs in (("points", sweep_point_runs), ("reference", sweep_reference_runs))}
            for name, sweep in sweeps(config).items()}


def self_distill_run(method: str, arch: str, seed: int) -> str:
    return f"{method}-{arch}-s{seed}"


def self_distill_runs(config: dict) -> dict[str, dict]:
    """Every multi-exit run: BYOT self-distillation, its baseline and deep supervision, once per seed."""
    c = config["self_distill"]
    source = dataset_config(config, c["dataset"])["source"]
    runs = {}
    for seed in c["seeds"]:
        for method in SELF_DISTILL_METHODS:
            name = self_distill_run(method, c["arch"], seed)
            runs[name] = {
                "family": "self_distill", "run": name, "method": method, "dataset": c["dataset"],
                "dataset_source": source, "device": config["device"], "augment": c["augment"],
                "arch": c["arch"], "width": c["width"], "seed": seed, "train": c["train"],
                "train_subset": c["train_subset"],
                **({"self_distill": {k: c[k] for k in ("temperature", "alpha", "lam", "detach_teacher")}}
                   if method == "self_distill" else {}),
            }
    return runs


def ae_data(config: dict) -> dict:
    """The autoencoder data block, with the pix2pix URL filled in when not given."""
    data = dict(config["autoencoder"]["data"])
    if data["source"] == "pix2pix":
        data.setdefault("url", PIX2PIX_URL)
    return data


def ae_variants(config: dict) -> dict[str, dict]:
    """Each named variant with every setting resolved (a variant's keys override the block's)."""
    c = config["autoencoder"]
    variants = {}
    for order, (name, v) in enumerate(c["variants"].items()):
        pairs = [list(p) for p in v.get("pairs", [])]
        variants[name] = {
            "name": name, "order": order, "pairs": pairs, "adapter": v.get("adapter") if pairs else None,
            "alpha": v.get("alpha", c["alpha"]) if pairs else 0.0,
            "match": v.get("match", c["match"]), "norm": v.get("norm", c["norm"]),
        }
    return variants


def ae_runs(config: dict) -> dict[str, dict]:
    """Every autoencoder-pair run: one per variant and seed."""
    c = config["autoencoder"]
    data = ae_data(config)
    runs = {}
    for seed in c["seeds"]:
        for name, variant in ae_variants(config).items():
            run = f"{name}-s{seed}"
            runs[run] = {"family": "autoencoder", "run": run, "method": name, "dataset": data["name"],
                         "dataset_source": data["source"], "device": config["device"], "augment": c["augment"],
                         "width": c["width"], "seed": seed, "train": c["train"], "variant": variant}
    return runs


def sweep_only_runs(config: dict) -> set[str]:
    """Classifier runs that only sweeps train (not the config's own): the KD tables leave them out."""
    return set(classify_runs(config)) - set(classify_runs(config, sweep_points=False))


def training_runs(config: dict) -> dict[tuple[str, str], dict]:
    """Every trained model of every family, keyed by (family, run name)."""
    runs = {("classify", name): cfg for name, cfg in classify_runs(config).items()}
    runs.update({("self_distill", name): cfg for name, cfg in self_distill_runs(config).items()})
    runs.update({("autoencoder", name): cfg for name, cfg in ae_runs(config).items()})
    # The config's `train:` block (CUDA graphs, precision, determinism) reaches every trained run's
    # recipe (an imported teacher keeps its source's: it is evaluated, and must not rerun when they change).
    return {key: cfg if "import" in cfg else {**cfg, "train": run_train_block(config, cfg["train"])}
            for key, cfg in runs.items()}


FAMILIES = ("classify", "self_distill", "autoencoder")


def family_datasets(config: dict) -> dict[str, str]:
    """The data set each model family trains on."""
    return {"classify": config["classify"]["dataset"], "self_distill": config["self_distill"]["dataset"],
            "autoencoder": ae_data(config)["name"]}


def used_datasets(config: dict) -> list[str]:
    return sorted(set(family_datasets(config).values()))


def data_jobs(config: dict, name: str) -> list[tuple[str, str]]:
    """The jobs that download and prepare data set ``name``, as (rule, job name), in order.

    Each job's log and benchmark are named after it (see ``log_path``, ``benchmark_path``).
    """
    ae = ae_data(config)
    if name == ae["name"]:
        source = ae["source"]
        download = [("download_pix2pix", f"{name}-{ARCHIVE_NAMES['pix2pix']}")] if source == "pix2pix" else []
        step = {"synthetic": "prepare_street_scenes", "pix2pix": "prepare_pix2pix", "official": "prepare_cityscapes"}
        return download + [(step[source], name)]
    source = dataset_config(config, name)["source"]
    if source == "synthetic":
        return [("prepare_synthetic", name)]
    return [("download_cifar", f"{name}-{ARCHIVE_NAMES[source]}"), ("prepare_cifar", name)]


def train_job(dataset: str, family: str, run: str) -> str:
    """The name a training job's log and benchmark carry."""
    return f"{dataset}-{family}-{run}"


def log_path(rule: str, job: str | None = None) -> str:
    return f"results/logs/{rule}/{job}.log" if job else f"results/logs/{rule}.log"


def benchmark_path(rule: str, job: str | None = None) -> str:
    return f"results/benchmarks/{rule}/{job}.tsv" if job else f"results/benchmarks/{rule}.tsv"
