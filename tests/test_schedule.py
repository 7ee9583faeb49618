"""Critical path first: teachers get the highest training priorities, in the plan and in the
priorities Snakemake actually assigns (a dry run of the demo; nothing is built)."""

import re
from pathlib import Path

import pytest
import yaml

from kdpipe import plan, schedule
from workflow_copy import copy_workflow, snakemake

ROOT = Path(__file__).resolve().parents[1]


def merged(*files) -> dict:
    cfg: dict = {}
    for f in files:
        for k, v in yaml.safe_load((ROOT / f).read_text()).items():
            cfg[k] = {**cfg[k], **v} if isinstance(v, dict) and isinstance(cfg.get(k), dict) else v
    return cfg


@pytest.mark.parametrize("files", [["config.yaml"], ["config.yaml", "presets/demo.yaml"]])
def test_teachers_outrank_every_job_nothing_waits_for(files):
    cfg = merged(*files)
    runs = plan.training_runs(cfg)
    prio = schedule.train_priorities(cfg, runs)
    teachers = [k for k, r in runs.items() if r.get("role") == "teacher"]
    others = [k for k in runs if k not in teachers]
    assert teachers and others
    assert min(prio[k] for k in teachers) > max(prio[k] for k in others)
    # a KD student (teacher forward on top of its own step) before the same student alone
    for key, run in runs.items():
        if run.get("method") == "kd_soft":
            alone = ("classify", plan.student_run("alone", run["arch"], None, run["seed"]))
            assert prio[key] > prio[alone]


def test_longer_chain_first_among_teachers():
    cfg = merged("config.yaml")
    prio = schedule.train_priorities(cfg)
    # resnet56 (14.5 s/epoch) and its students outlast resnet32x4 (9.0 s/epoch) and its students
    assert prio[("classify", "teacher-resnet56-s0")] > prio[("classify", "teacher-resnet32x4-s0")]


def test_snakemake_assigns_the_priorities(tmp_path):
    workdir = copy_workflow(tmp_path / "w")
    out = snakemake(workdir, "results/report.pdf", "-n", "--cores", "1", "--configfile", "presets/demo.yaml").stdout
    jobs = re.findall(r"rule train:\n(?:.*\n)*?\s+wildcards: dataset=\S+, family=(\w+), run=(\S+)\n"
                      r"(?:(?!rule ).*\n)*?\s+priority: ([\d.]+)", out)
    prio = {(f, r): float(p) for f, r, p in jobs}
    cfg = merged("config.yaml", "presets/demo.yaml")
    runs = plan.training_runs(cfg)
    assert set(prio) == set(runs), out[-3000:]
    teachers = {k for k, r in runs.items() if r.get("role") == "teacher"}
    assert min(prio[k] for k in teachers) > max(v for k, v in prio.items() if k not in teachers)


def test_an_architecture_without_an_epoch_time_is_refused_at_config_time(monkeypatch):
    """Never another architecture's time: a pair naming one whose registry entry has no epoch_s stops
    the config check, naming the key, the architecture and what to add."""
    from dataclasses import replace

    from snakemake.utils import update_config

    from kdpipe import architectures
    from kdpipe.config_checks import ConfigError, check_config
    from kdpipe.config_schema import validate_config

    cfg: dict = {}
    for f in ("config.yaml", "presets/demo.yaml"):  # demo: resnet14 -> resnet8
        update_config(cfg, yaml.safe_load((ROOT / f).read_text()))
    validate_config(cfg, ROOT / "workflow" / "schemas" / "config.schema.yaml")
    check_config(cfg)
    assert schedule.classify_epoch_s("resnet14") == architectures.get("resnet14").epoch_s == 3.63
    monkeypatch.setitem(architectures.ARCHITECTURES, "resnet14", replace(architectures.get("resnet14"), epoch_s=None))
    with pytest.raises(ConfigError) as err:
        check_config(cfg)
    assert str(err.value) == (
        "classify.pairs[0].teacher: resnet14 has no expected epoch time; add epoch_s to its entry in "
        "kdpipe.architectures (seconds per epoch of 50,000 CIFAR images on one GPU, eager fp32; an estimate "
        "labelled as one will do)")
    with pytest.raises(ValueError, match="resnet14"):
        schedule.classify_epoch_s("resnet14")


def test_a_multi_exit_run_takes_its_own_method_and_architecture_time():
    """deep_supervision has its own (estimated) time, not BYOT's; the architecture scales it; width and
    training images as before. By hand: 200 epochs x 4.6 s x 1.9 (resnet34) x (32/64)^2 x 10,000/50,000."""
    run = {"family": "self_distill", "method": "deep_supervision", "arch": "resnet34", "width": 32,
           "train": {"epochs": 200}, "train_subset": 10_000}
    assert schedule.expected_seconds({}, run) == pytest.approx(200 * 4.6 * 1.9 * 0.25 * 0.2)
    assert schedule.self_distill_epoch_s("self_distill", "resnet18") == 4.9
    assert schedule.self_distill_epoch_s("baseline", "resnet50") == pytest.approx(3.6 * 4.65)
    # between the baseline (CE at the last exit) and BYOT (CE at every exit plus KL and feature terms)
    assert (schedule.SELF_DISTILL_EPOCH_S["baseline"] < schedule.SELF_DISTILL_EPOCH_S["deep_supervision"]
            < schedule.SELF_DISTILL_EPOCH_S["self_distill"])
    # every multi-exit architecture and every multi-exit method has a time
    from kdpipe.models.multi_exit import MULTI_EXIT_RESNETS
    assert set(schedule.MULTI_EXIT_FACTOR) == set(MULTI_EXIT_RESNETS)
    assert set(schedule.SELF_DISTILL_EPOCH_S) == set(plan.SELF_DISTILL_METHODS)
    with pytest.raises(ValueError, match="'new_method'"):
        schedule.self_distill_epoch_s("new_method", "resnet18")
    with pytest.raises(ValueError, match="'resnet101'"):
        schedule.self_distill_epoch_s("baseline", "resnet101")


def test_a_multi_exit_method_or_architecture_without_a_time_is_refused_at_config_time(monkeypatch):
    from snakemake.utils import update_config

    from kdpipe.config_checks import ConfigError, check_config
    from kdpipe.config_schema import validate_config

    cfg: dict = {}
    for f in ("config.yaml", "presets/demo.yaml"):
        update_config(cfg, yaml.safe_load((ROOT / f).read_text()))
    validate_config(cfg, ROOT / "workflow" / "schemas" / "config.schema.yaml")
    check_config(cfg)
    times = {k: v for k, v in schedule.SELF_DISTILL_EPOCH_S.items() if k != "deep_supervision"}
    monkeypatch.setattr(schedule, "SELF_DISTILL_EPOCH_S", times)
    with pytest.raises(ConfigError, match=r"^self_distill: method deep_supervision has no expected epoch time; "
                                          r"add it to SELF_DISTILL_EPOCH_S in kdpipe.schedule"):
        check_config(cfg)
    monkeypatch.undo()
    monkeypatch.setattr(schedule, "MULTI_EXIT_FACTOR", {"resnet34": 1.9})
    with pytest.raises(ConfigError, match=r"^self_distill.arch: resnet18 has no expected epoch time; "
                                          r"add it to MULTI_EXIT_FACTOR in kdpipe.schedule"):
        check_config(cfg)
