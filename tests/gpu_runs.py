"""The run configs the CUDA tests train, built the way the workflow builds them, and how to train them.

config.yaml + presets/demo.yaml + presets/tiny.yaml + tests/presets/gpu-tests.yaml (+ a test's own
overlay) are merged as `--configfile` merges them, validated with the workflow's schema where
Snakemake is installed (the GPU machines have no Snakemake: there the CPU test's proof that
validation changes no run config stands in), checked by kdpipe.config_checks, and turned into run
configs by ``kdpipe.plan.training_runs``: the CUDA tests cannot drift from the schema, and
tests/test_gpu_tools_without_gpu.py checks exactly these configs on every CI run.

Run as a script, it trains a list of jobs in one process (two such processes side by side are
the two-run determinism check; one process start instead of one per job):

    python tests/gpu_runs.py JOBS.json      # [{"cfg": ..., "train": ..., "test": ..., "teacher": ..., "out": ...}]
"""

import copy
import json
import os
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

from kdpipe import methods, plan  # noqa: E402
from kdpipe.config_checks import check_config  # noqa: E402

SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"
PRESETS = [ROOT / "presets" / "demo.yaml", ROOT / "presets" / "tiny.yaml", ROOT / "tests" / "presets" / "gpu-tests.yaml"]

# Overlays on the preset's `train:` block (graphs on, bf16, deterministic)
GRAPHS_BF16: dict = {}
GRAPHS_FP32 = {"train": {"cuda_graphs": "on", "precision": "fp32"}}
EAGER_FP32 = {"train": {"cuda_graphs": "off", "precision": "fp32"}}
DEFAULTS = {"train": {"cuda_graphs": "auto", "precision": "auto", "deterministic": True}}
# Ten epochs for the SIGKILL + resume test: epochs this short on a GPU need a wide window to kill in
LONG = {"classify": {"teacher_train": {"epochs": 10, "lr_milestones": [6]},
                     "student_train": {"epochs": 10, "lr_milestones": [6]}},
        "self_distill": {"train": {"epochs": 10, "lr_milestones": [6]}},
        "autoencoder": {"train": {"epochs": 10, "lr_milestones": [6]}}}
SETTINGS = {"graphs_bf16": GRAPHS_BF16, "graphs_fp32": GRAPHS_FP32, "eager_fp32": EAGER_FP32, "defaults": DEFAULTS}


def merge(base: dict, over: dict) -> dict:
    """Snakemake's update_config (what --configfile does): nested dicts merged key by key."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def raw_config(*overlays: dict) -> dict:
    """config.yaml with the presets and ``overlays`` merged, not yet validated."""
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    for layer in [yaml.safe_load(p.read_text()) for p in PRESETS] + list(overlays):
        config = merge(config, layer)
    return config


def validate(config: dict) -> bool:
    """The workflow's schema validation (it fills the schema's defaults in), where Snakemake is installed.

    The GPU machines have neither Snakemake nor jsonschema: there ``fill_defaults`` adds what
    validation would add, and tests/test_gpu_tools_without_gpu.py proves on every CI run that
    both give the same run configs. Returns whether the schema was checked.
    """
    try:
        import snakemake.utils  # noqa: F401

        from kdpipe.config_schema import validate_config
    except ImportError:
        fill_defaults(config)
        return False
    validate_config(config, SCHEMA)
    return True


def fill_defaults(config: dict) -> dict:
    """The schema's ``default`` values put where they are missing (properties, $ref, items and
    additionalProperties followed), as Snakemake's validate(set_default=True) does; no checking."""
    from kdpipe.config_schema import config_schema

    schema = config_schema(SCHEMA)

    def resolve(node):
        while isinstance(node, dict) and "$ref" in node:
            ref = node["$ref"]
            target = schema
            for part in ref.removeprefix("#/").split("/"):
                target = target[part]
            node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return node

    def fill(node, value):
        node = resolve(node)
        if isinstance(value, dict):
            for key, sub in node.get("properties", {}).items():
                sub = resolve(sub)
                if "default" in sub:
                    value.setdefault(key, copy.deepcopy(sub["default"]))
                if key in value:
                    fill(sub, value[key])
            extra = node.get("additionalProperties")
            if isinstance(extra, dict):
                for key in set(value) - set(node.get("properties", {})):
                    fill(extra, value[key])
        elif isinstance(value, list) and isinstance(node.get("items"), dict):
            for item in value:
                fill(node["items"], item)

    fill(schema, config)
    return config


def config(*overlays: dict) -> dict:
    """The validated, checked config the workflow would run with these overlays."""
    cfg = raw_config(*overlays)
    validate(cfg)
    check_config(cfg)
    return cfg


def runs(*overlays: dict) -> dict[str, dict]:
    """Every run of the config as ``{"family/run": run_config}`` (kdpipe.plan.training_runs)."""
    return {f"{family}/{name}": cfg for (family, name), cfg in plan.training_runs(config(*overlays)).items()}


def teacher_of(cfg: dict) -> str | None:
    """The key (in ``runs``) of the run whose model.pt a student learns from."""
    return f"classify/{cfg['teacher_run']}" if cfg.get("teacher_run") else None


def coverage(run_configs: dict[str, dict]) -> dict[str, set]:
    """What the runs cover, by family: classifier methods (with the teacher), BYOT methods, AE variants."""
    found: dict[str, set] = {}
    for cfg in run_configs.values():
        found.setdefault(cfg["family"], set()).add(cfg["method"])
    return found


def expected_coverage(cfg: dict) -> dict[str, set]:
    return {"classify": {"teacher", *methods.METHODS}, "self_distill": set(plan.SELF_DISTILL_METHODS),
            "autoencoder": set(cfg["autoencoder"]["variants"])}


def prepare_data(cfg: dict, folder: Path) -> dict[str, tuple[Path, Path]]:
    """Every data set the runs train on, prepared as the workflow's data rules prepare it:
    ``{dataset: (train.pt, test.pt)}``."""
    from kdpipe.data.street_scenes import prepare_street_scenes
    from kdpipe.data.synthetic import prepare_synthetic

    out = {}
    ae = plan.ae_data(cfg)
    for name in plan.used_datasets(cfg):
        train, test = folder / name / "train.pt", folder / name / "test.pt"
        train.parent.mkdir(parents=True, exist_ok=True)
        if name == ae["name"]:
            assert ae["source"] == "synthetic", "the CUDA tests train on offline data only"
            prepare_street_scenes({k: ae[k] for k in ("num_train", "num_test", "size", "seed") if k in ae},
                                  train_out=train, test_out=test)
        else:
            entry = plan.dataset_config(cfg, name)
            assert entry["source"] == "synthetic", "the CUDA tests train on offline data only"
            prepare_synthetic({k: v for k, v in entry.items() if k != "source"}, train_out=train, test_out=test)
        out[name] = (train, test)
    return out


def out_files(out: Path) -> dict:
    return {"model_path": out / "model.pt", "metrics_path": out / "metrics.json", "history_path": out / "history.csv",
            "resume_path": out / "resume.pt"}


def train_in_process(cfg: dict, data: dict, out: Path, teacher: Path | None = None) -> None:
    """One `kdpipe train` job in this process (no start-up cost)."""
    from kdpipe.training.run import train

    out.mkdir(parents=True, exist_ok=True)
    train_path, test_path = data[cfg["dataset"]]
    train(cfg, train_path=train_path, test_path=test_path, teacher_path=teacher, **out_files(out))


def command(cfg: dict, data: dict, out: Path, teacher: Path | None = None) -> list[str]:
    """One `kdpipe train` job as its own process (``python -m kdpipe.cli``: no console script needed)."""
    train_path, test_path = data[cfg["dataset"]]
    f = out_files(out)
    cmd = [sys.executable, "-m", "kdpipe.cli", "train", "--run-config", json.dumps(cfg), "--train", str(train_path),
           "--test", str(test_path), "--model", str(f["model_path"]), "--metrics", str(f["metrics_path"]),
           "--history", str(f["history_path"]), "--resume", str(f["resume_path"])]
    return cmd + (["--teacher", str(teacher)] if teacher else [])


def job(cfg: dict, data: dict, out: Path, teacher: Path | None = None) -> dict:
    """A job for ``batch_command``'s list."""
    train_path, test_path = data[cfg["dataset"]]
    return {"cfg": cfg, "train": str(train_path), "test": str(test_path), "out": str(out),
            "teacher": str(teacher) if teacher else None}


def batch_command(jobs_file: Path) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), str(jobs_file)]


def subprocess_env() -> dict:
    """This environment with src/ importable and nothing that redirects a job's device."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))}
    for var in ("KDPIPE_SIMULATED_GPUS", "SLURM_JOB_ID", "KDPIPE_JOBS_PER_GPU"):
        env.pop(var, None)
    return env


def main(argv: list[str]) -> int:
    jobs = json.loads(Path(argv[0]).read_text())
    for j in jobs:
        data = {j["cfg"]["dataset"]: (Path(j["train"]), Path(j["test"]))}
        train_in_process(j["cfg"], data, Path(j["out"]), Path(j["teacher"]) if j["teacher"] else None)
        print(f"trained {j['cfg']['run']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
