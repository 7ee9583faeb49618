"""Configs as a careless or hostile user writes them (issue 19): NaN and infinities, YAML alias
bombs, hostile config file names in dvc.yaml commands, run configs given to `kdpipe train` by hand.

Each refusal is one line naming the key; the real `snakemake` and `kdpipe` commands are run where
the wiring is what matters (a temporary copy of the workflow, nothing written to the project).
"""

import json
import os
import shlex
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest
import yaml

from config_check import DEMO, ROOT, SCHEMA, merged, refusal
from kdpipe import cli, config_checks, plan, run_config
from kdpipe.config_checks import MAX_DEPTH, MAX_NODES, ConfigError, bounded_and_finite, key_path
from workflow_copy import copy_workflow, snakemake

TINY = yaml.safe_load((ROOT / "presets" / "tiny.yaml").read_text())


def alias_bomb(levels: int = 10) -> str:
    """An overlay of ``levels`` nested aliases, each a list of nine of the one before: 9**levels
    values once expanded, a few hundred bytes of YAML."""
    lines = ["      a0: &a0 [1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    lines += [f"      a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "classify:\n  method_params:\n    bomb:\n" + "\n".join(lines) + "\n"


# ------------------------------------------------------------------------ every number is finite

# (YAML overlay on the demo preset, the key path the refusal names, the value as YAML writes it)
NON_FINITE = {
    "kd_soft temperature": ("classify: {method_params: {kd_soft: {temperature: .nan}}}",
                            "classify.method_params.kd_soft.temperature", ".nan"),
    "kd_soft alpha": ("classify: {method_params: {kd_soft: {alpha: .inf}}}",
                      "classify.method_params.kd_soft.alpha", ".inf"),
    "a pair's temperature": ("classify: {pairs: [{teacher: resnet14, student: resnet8, method_params: "
                             "{kd_soft: {temperature: -.inf}}}]}",
                             "classify.pairs[0].method_params.kd_soft.temperature", "-.inf"),
    "student lr": ("classify: {student_train: {lr: .inf}}", "classify.student_train.lr", ".inf"),
    "self_distill lam": ("self_distill: {lam: .NaN}", "self_distill.lam", ".nan"),
    "self_distill temperature": ("self_distill: {temperature: .Inf}", "self_distill.temperature", ".inf"),
    "autoencoder alpha": ("autoencoder: {alpha: .nan}", "autoencoder.alpha", ".nan"),
    "a variant's alpha": ("autoencoder: {variants: {e1d4_conv: {pairs: [[1, 4]], adapter: conv, alpha: .nan}}}",
                          "autoencoder.variants.e1d4_conv.alpha", ".nan"),
    "Adam's beta": ("autoencoder: {train: {betas: [0.5, .nan]}}", "autoencoder.train.betas[1]", ".nan"),
    "generator noise": ("datasets: {synthetic10: {sample_noise: .inf}}", "datasets.synthetic10.sample_noise", ".inf"),
}


@pytest.mark.parametrize("case", sorted(NON_FINITE))
def test_a_non_finite_number_is_refused_naming_its_key(case):
    text, path, word = NON_FINITE[case]
    message = refusal(DEMO, yaml.safe_load(text))
    assert message == f"Error in the config: {path}: {word} is not a finite number; give a finite value"


def test_key_paths_read_as_written():
    assert key_path(("classify", "pairs", 0, "method_params", "kd_soft", "alpha")) == \
        "classify.pairs[0].method_params.kd_soft.alpha"
    assert key_path(("a", 3, 1)) == "a[3][1]"
    assert key_path(()) == "(top level)"


# ------------------------------------------------------------------------ the size budget


def test_the_budget_counts_every_appearance_of_a_shared_object():
    shared = [0] * 9
    # 1 list under "a" + 20,000 appearances of `shared` + 9 values in each: 200,001 nodes, 10 distinct.
    with pytest.raises(ConfigError, match=f"more than {MAX_NODES} values"):
        bounded_and_finite({"a": [shared] * 20_000})
    # The top dict's one entry plus a list of N values: exactly MAX_NODES is allowed, one more is not.
    bounded_and_finite({"a": [0] * (MAX_NODES - 1)})
    with pytest.raises(ConfigError, match=r"more than 100000 values \(at a\)"):
        bounded_and_finite({"a": [0] * MAX_NODES})


def test_the_budget_bounds_depth_and_refuses_a_config_that_contains_itself():
    def nested(levels):
        x = []
        for _ in range(levels):
            x = [x]
        return x

    bounded_and_finite(nested(MAX_DEPTH - 1))  # the innermost list is MAX_DEPTH - 1 keys down
    with pytest.raises(ConfigError, match=f"deeper than {MAX_DEPTH} levels"):
        bounded_and_finite(nested(MAX_DEPTH))
    loop = {"x": []}
    loop["x"].append(loop)  # YAML `a: &a [*a]` loads as such a loop
    with pytest.raises(ConfigError, match=r"deeper than 32 levels at x\[0\]\.x\[0\]"):
        bounded_and_finite(loop)


def test_an_alias_bomb_is_refused_in_bounded_time_and_memory():
    bomb = yaml.safe_load(alias_bomb())  # loads fast: every alias is the same object
    tracemalloc.start()
    started = time.perf_counter()
    message = refusal(DEMO, bomb)  # merged as --configfile does, then validated as the workflow does
    elapsed = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert message.startswith("Error in the config: config expands to more than 100000 values "
                              "(at classify.method_params.bomb.")
    assert "YAML aliases" in message
    assert elapsed < 5 and peak < 100 * 2**20, (elapsed, peak)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return copy_workflow(tmp_path_factory.mktemp("hardening"))


REAL_RUN_OVERLAYS = {
    "alias bomb": (alias_bomb(), "config expands to more than 100000 values (at classify.method_params.bomb."),
    "nan": ("classify: {method_params: {kd_soft: {temperature: .nan}}}\n",
            "classify.method_params.kd_soft.temperature: .nan is not a finite number"),
}


@pytest.mark.parametrize("case", sorted(REAL_RUN_OVERLAYS))
def test_snakemake_refuses_before_validating(workdir, case):
    text, words = REAL_RUN_OVERLAYS[case]
    overlay = workdir / f"{case.replace(' ', '-')}.yaml"
    overlay.write_text(text)
    started = time.monotonic()
    proc = snakemake(workdir, "-n", "results/report.pdf", "--cores", "1", "--configfile", "presets/demo.yaml",
                     overlay.name, check=False, timeout=60)
    assert time.monotonic() - started < 30
    assert proc.returncode != 0
    assert f"Error in the config: {words}" in proc.stdout, proc.stdout[-3000:]
    assert "Error validating config file" not in proc.stdout  # the schema never saw it
    assert not (workdir / "results").exists() and not (workdir / "data").exists()


# Runs a command (argv[2:]) and writes the peak resident memory, in KiB, of it and its children to
# argv[1]: measured in a process of its own, so no other process the tests started counts.
MEASURED = (
    "import resource, subprocess, sys; rc = subprocess.run(sys.argv[2:]).returncode; "
    "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)); sys.exit(rc)"
)


@pytest.mark.parametrize("case", sorted(REAL_RUN_OVERLAYS))
def test_kdpipe_dvc_yaml_refuses_on_one_line(tmp_path, case):
    text, words = REAL_RUN_OVERLAYS[case]
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(text)
    out = tmp_path / "dvc.yaml"
    peak = tmp_path / "peak_kib"
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", MEASURED, str(peak), "kdpipe", "dvc-yaml", "--configfile", str(overlay),
                           "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert time.monotonic() - started < 30
    # The command's own peak memory (its child processes included): far below the 2 GB a bomb takes.
    assert int(peak.read_text()) < 1024 * 1024
    assert proc.returncode != 0 and proc.stdout == ""
    assert proc.stderr.startswith(f"kdpipe: config.yaml + {overlay}: ")
    assert words in proc.stderr and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert not out.exists()


def test_a_python_tag_never_runs(workdir, tmp_path):
    marker = tmp_path / "tag-ran"
    overlay = tmp_path / "tagged.yaml"
    overlay.write_text(f'name: !!python/object/apply:os.system ["touch {marker}"]\n')
    proc = snakemake(workdir, "-n", "results/report.pdf", "--cores", "1", "--configfile", str(overlay),
                     check=False, timeout=60)
    assert proc.returncode != 0 and "Config file is not valid JSON or YAML" in proc.stdout
    proc = subprocess.run(["kdpipe", "dvc-yaml", "--configfile", str(overlay), "--out", str(tmp_path / "dvc.yaml")],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and proc.stderr.count("\n") == 1
    assert proc.stderr.startswith(f"kdpipe: config.yaml + {overlay}: {overlay}: not a plain YAML config (")
    assert "python/object/apply" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tagged.yaml"]


# ------------------------------------------------------------------------ quoted dvc.yaml commands

HOSTILE = "presets/shared/exp;touch PWNED;.yaml"
SPACED = "presets/my overlay.yaml"


@pytest.fixture(scope="module")
def hostile_project(tmp_path_factory):
    """A copy of the workflow (code from this checkout) holding overlays with hostile and spaced names,
    and the dvc.yaml `kdpipe dvc-yaml` writes for them."""
    project = copy_workflow(tmp_path_factory.mktemp("quoting") / "project")
    (project / "src").symlink_to(ROOT / "src")  # what dvc-yaml lists as each stage's code
    (project / HOSTILE).parent.mkdir(parents=True)
    (project / HOSTILE).write_text("name: shared\n")
    (project / SPACED).write_text("classify: {train_subset: 120}\n")
    overlays = ["presets/demo.yaml", "presets/tiny.yaml", HOSTILE, SPACED]
    proc = subprocess.run(["kdpipe", "dvc-yaml", "--configfile", *overlays], cwd=project, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return project, overlays


def test_every_stage_command_parses_back_to_its_words(hostile_project):
    project, overlays = hostile_project
    text = (project / "dvc.yaml").read_text()
    header = text.splitlines()[0]
    assert shlex.split(header.split("`")[1]) == ["kdpipe", "dvc-yaml", "--configfile", *overlays]
    stages = yaml.safe_load(text)["stages"]
    assert {"classify", "tables", "report"} <= set(stages)
    for name, stage in stages.items():
        argv = ["snakemake", *stage["meta"]["snakemake_targets"], "--cores", "all", "--configfile", *overlays]
        assert shlex.split(stage["cmd"]) == argv, name
    # The overlay's keys are tracked as parameters of the file they come from.
    assert {SPACED: ["classify"]} in stages["classify"]["params"]


def test_a_hostile_config_file_name_runs_nothing(hostile_project, tmp_path):
    project, overlays = hostile_project
    stages = yaml.safe_load((project / "dvc.yaml").read_text())["stages"]
    # Run every stage's cmd through a shell as DVC does, with a `snakemake` first on PATH that only
    # records the words it got, so no pipeline runs.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "argv.jsonl"
    fake = bin_dir / "snakemake"
    fake.write_text(f"#!{sys.executable}\nimport json, sys\n"
                    f"open({str(record)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n")
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    for stage in stages.values():
        subprocess.run(["bash", "-c", stage["cmd"]], cwd=project, env=env, check=True, timeout=30)
    recorded = [json.loads(line) for line in record.read_text().splitlines()]
    assert recorded == [[*s["meta"]["snakemake_targets"], "--cores", "all", "--configfile", *overlays]
                        for s in stages.values()]
    assert not list(project.rglob("PWNED")) and not list(tmp_path.rglob("PWNED"))


def test_the_real_snakemake_reads_quoted_overlays(hostile_project):
    # One stage's command as DVC would run it, as a dry run printing the jobs' commands: the spaced
    # and the hostile overlay are each read as one config file (their settings reach the jobs).
    project, _ = hostile_project
    cmd = yaml.safe_load((project / "dvc.yaml").read_text())["stages"]["report"]["cmd"]
    proc = subprocess.run(["bash", "-c", cmd + " -n -p"], cwd=project, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert '\\"train_subset\\": 120' in proc.stdout or '"train_subset": 120' in proc.stdout
    assert "--name shared" in proc.stdout
    assert not list(project.rglob("PWNED"))
    assert not (project / "results").exists()


def test_a_config_file_name_with_a_newline_is_refused(tmp_path):
    from kdpipe.dvc_stages import dvc_pipeline

    with pytest.raises(ConfigError, match=r"--configfile 'a\\nb.yaml': .* control character"):
        dvc_pipeline(ROOT, ["a\nb.yaml"])


# ------------------------------------------------------------------------ `kdpipe train --run-config`


def _demo_runs() -> dict:
    return plan.training_runs(merged(DEMO))


def _kd_soft() -> dict:
    return json.loads(json.dumps(_demo_runs()[("classify", "kd_soft-resnet8-from-resnet14-s0")]))


def _with(path: str, value) -> dict:
    cfg = _kd_soft()
    *parents, last = path.split(".")
    node = cfg
    for p in parents:
        node = node[p]
    node[last] = value
    return cfg


# (run config, the key the message names, words it must hold)
BAD_RUN_CONFIGS = {
    "unknown method": (_with("method", "evil"), "method", "'evil' is not one of"),
    "unknown architecture": (_with("arch", "resnet9000"), "arch", "'resnet9000' is not one of"),
    "unknown teacher architecture": (_with("teacher", "vgg"), "teacher", "'vgg' is not one of"),
    "unknown family": (_with("family", "../../os"), "family", "'../../os' is not one of classify"),
    "no family": ({k: v for k, v in _kd_soft().items() if k != "family"}, "family", "None is not one of"),
    "negative batch size": (_with("train.batch_size", -1), "train.batch_size", "-1 is less than the minimum of 1"),
    "zero epochs": (_with("train.epochs", 0), "train.epochs", "0 is less than the minimum of 1"),
    "no epochs": ({**_kd_soft(), "train": {k: v for k, v in _kd_soft()["train"].items() if k != "epochs"}},
                  "train", "'epochs' is a required property"),
    "NaN temperature": (_with("method_params.temperature", float("nan")), "method_params.temperature",
                        ".nan is not a finite number"),
    "infinite lr": (_with("train.lr", float("inf")), "train.lr", ".inf is not a finite number"),
    "alpha above 1": (_with("method_params.alpha", 2), "method_params.alpha", "2 is greater than the maximum of 1"),
    "a misspelt setting": (_with("method_params.temprature", 2), "method_params",
                           "('temprature' was unexpected)"),
    "missing settings": ({k: v for k, v in _kd_soft().items() if k != "method_params"}, "method_params",
                         "kd_soft needs its settings (temperature, alpha)"),
    "a run name with a path": (_with("run", "../x"), "run", "does not match"),
    "not an object": ([1, 2], "run config", "expected a JSON object"),
}


def _train_args(cfg_json: str, out: Path, teacher: bool = True) -> list[str]:
    return ["train", "--run-config", cfg_json, "--train", str(out / "train.pt"), "--test", str(out / "test.pt"),
            *(["--teacher", str(out / "teacher.pt")] if teacher else []),
            "--model", str(out / "run" / "model.pt"), "--metrics", str(out / "run" / "metrics.json"),
            "--history", str(out / "run" / "history.csv"), "--resume", str(out / "run" / "resume.pt")]


@pytest.mark.parametrize("case", sorted(BAD_RUN_CONFIGS))
def test_kdpipe_train_refuses_a_bad_run_config(case, tmp_path, capsys):
    cfg, key, words = BAD_RUN_CONFIGS[case]
    rc = cli.main(_train_args(json.dumps(cfg), tmp_path))
    err = capsys.readouterr().err
    assert rc == 1
    prefix = "kdpipe: run config: " if key == "run config" else f"kdpipe: run config: {key}: "
    assert err.startswith(prefix) and words in err and err.count("\n") == 1, err
    assert list(tmp_path.iterdir()) == []  # nothing written, not even the run folder


@pytest.mark.parametrize("case", ["unknown method", "unknown family", "NaN temperature"])
def test_the_kdpipe_command_refuses_a_bad_run_config_on_one_line(case, tmp_path):
    cfg, key, words = BAD_RUN_CONFIGS[case]
    proc = subprocess.run(["kdpipe", *_train_args(json.dumps(cfg), tmp_path)], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith(f"kdpipe: run config: {key}: ") and words in proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stdout == ""
    assert list(tmp_path.iterdir()) == []


def test_a_method_that_learns_from_a_teacher_needs_the_teacher_model(tmp_path, capsys):
    assert cli.main(_train_args(json.dumps(_kd_soft()), tmp_path, teacher=False)) == 1
    assert capsys.readouterr().err.startswith("kdpipe: --teacher: run config method kd_soft learns from a teacher")
    no_teacher = {k: v for k, v in _kd_soft().items() if k not in ("teacher",)}
    assert cli.main(_train_args(json.dumps(no_teacher), tmp_path)) == 1
    assert capsys.readouterr().err == "kdpipe: run config: teacher: kd_soft learns from a teacher; give its teacher\n"


@pytest.mark.parametrize("overlays", [[], [DEMO], [DEMO, TINY]], ids=["config.yaml", "demo", "tiny"])
def test_every_run_config_the_plan_makes_is_valid(overlays):
    runs = plan.training_runs(merged(*overlays))
    assert {family for family, _ in runs} == {"classify", "self_distill", "autoencoder"}
    for (family, run), cfg in runs.items():
        # As the train rule passes it: JSON text.
        run_config.validate_run_config(json.loads(json.dumps(cfg)), teacher_given="teacher_run" in cfg)


def _strip(schema):
    """A schema fragment without what does not constrain (descriptions, defaults)."""
    if isinstance(schema, dict):
        return {k: _strip(v) for k, v in schema.items() if k not in ("description", "default")}
    if isinstance(schema, list):
        return [_strip(v) for v in schema]
    return schema


def test_run_config_ranges_are_the_config_schemas():
    config_schema = yaml.safe_load(SCHEMA.read_text())
    defs = config_schema["$defs"]
    recipe = _strip(defs["recipe"])
    for key in ("cuda_graphs", "precision", "deterministic"):
        recipe["properties"][key] = _strip(defs[key])
    assert run_config.RECIPE == recipe
    assert run_config.ALPHA == _strip(defs["alpha"])
    assert run_config.CIFAR_SOURCES == defs["dataset"]["properties"]["source"]["enum"]
    ae = config_schema["properties"]["autoencoder"]["properties"]
    assert run_config.AE_SOURCES == ae["data"]["properties"]["source"]["enum"]
    variant = ae["variants"]["additionalProperties"]["properties"]
    schemas = run_config.family_schemas()
    run_variant = schemas["autoencoder"]["properties"]["variant"]["properties"]
    assert run_variant["pairs"]["items"] == variant["pairs"]["items"]
    assert run_variant["adapter"]["enum"] == [*variant["adapter"]["enum"], None]  # null: a baseline's
    for key in ("match", "norm"):
        assert run_variant[key] == variant[key]
    sd = _strip(config_schema["properties"]["self_distill"]["properties"])
    run_sd = schemas["self_distill"]["properties"]
    assert run_sd["arch"] == {"enum": sorted(sd["arch"]["enum"])}
    assert run_sd["self_distill"]["properties"]["temperature"] == _strip(defs["temperature"])
    assert run_sd["self_distill"]["properties"]["lam"] == sd["lam"]
    assert run_sd["width"] == sd["width"]
    from kdpipe.config_schema import config_schema as merged_schema  # $defs/arch: the architecture registry's

    arch_enum = merged_schema(SCHEMA)["$defs"]["arch"]["enum"]
    assert schemas["classify"]["properties"]["arch"] == {"enum": sorted(arch_enum)}
    assert schemas["classify"]["properties"]["train_subset"] == _strip(
        config_schema["properties"]["classify"]["properties"]["train_subset"])
    from kdpipe.training.run import FAMILIES

    assert schemas.keys() == FAMILIES.keys()
    assert config_checks.SAFE_NAME.pattern == defs["safe_name"]["pattern"]
