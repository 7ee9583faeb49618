"""Sweeps (classify.sweeps): how a sweep expands into runs, and what the config checks refuse.

The tables, chart and report section are tested on hand-made metrics in tests/test_sweep_tables.py,
and at the end of this file on the session's tiny build (presets/tiny.yaml holds a sweep of each kind).
"""

from collections import Counter

import pandas as pd
import pytest
import yaml

from config_check import DEMO, ROOT, SCHEMA, merged, refusal
from kdpipe import methods, plan
from kdpipe.config_schema import validate_config

TINY = yaml.safe_load((ROOT / "presets" / "tiny.yaml").read_text())
SWEEP_DEMO = yaml.safe_load((ROOT / "presets" / "sweep-demo.yaml").read_text())


def config_of(*overlays: dict) -> dict:
    config = merged(*overlays)
    validate_config(config, SCHEMA)  # fills the schema's defaults, as the workflow does
    return config


def sweep(setting: str, values: list, **extra) -> dict:
    return {"classify": {"sweeps": {"s": {"setting": setting, "values": values, **extra}}}}


# ---------------------------------------------------------------------------- expansion


def test_values_read_as_safe_run_name_words():
    assert [plan.value_word(v) for v in (4, 4.0, 0.5, 16, 1e-5, 2.5e6, 500)] == \
        ["4", "4", "0p5", "16", "1em05", "2p5e06", "500"]


def test_a_setting_sweep_adds_one_run_per_new_value_pair_and_seed_and_reuses_the_own_run():
    config = config_of(DEMO, SWEEP_DEMO)  # kd_soft's own temperature in the demo is 2; seeds 0 and 1
    own = set(plan.classify_runs(config, sweep_points=False))
    runs = plan.classify_runs(config)
    points = plan.sweep_runs(config)["temperature"]
    assert points["points"] == [f"kd_soft-resnet8-from-resnet14{word}-s{seed}" for seed in (0, 1)
                                for word in ("-temperature1", "", "-temperature4", "-temperature8")]
    assert points["reference"] == ["alone-resnet8-s0", "alone-resnet8-s1"]  # the student alone: the config's own runs
    assert {"kd_soft-resnet8-from-resnet14-s0", "alone-resnet8-s0"} <= own
    for name in points["points"]:
        cfg = runs[name]
        assert cfg["run"] == name and cfg["method"] == "kd_soft" and cfg["teacher_run"] == f"teacher-resnet14-s{cfg['seed']}"
        value = 2 if name in own else int(name.split("temperature")[1].split("-")[0])
        # only the swept setting differs from the own run of the same seed
        mine = runs[f"kd_soft-resnet8-from-resnet14-s{cfg['seed']}"]
        assert cfg["method_params"] == {**mine["method_params"], "temperature": value}
        assert {k: v for k, v in cfg.items() if k not in ("run", "method_params")} == \
            {k: v for k, v in mine.items() if k not in ("run", "method_params")}


def test_a_transfer_set_sweep_draws_every_listed_method_and_shares_the_teachers():
    config = config_of(DEMO, SWEEP_DEMO)
    runs = plan.classify_runs(config)
    points = plan.sweep_runs(config)["transfer_set"]
    assert points["reference"] == []
    sizes = {name: runs[name]["train_subset"] for name in points["points"]}
    assert Counter(sizes.values()) == {50: 4, 100: 4, 200: 4, 400: 4}  # 2 methods x 2 seeds per size
    assert sizes["alone-resnet8-subset50-s1"] == 50 and sizes["alone-resnet8-s1"] == 200  # the demo's own 200
    # teachers: one per seed, whatever the sweeps ask
    assert sorted(n for n, cfg in runs.items() if cfg["role"] == "teacher") == ["teacher-resnet14-s0", "teacher-resnet14-s1"]
    assert all(runs[n]["teacher_run"] == f"teacher-resnet14-s{runs[n]['seed']}" for n in points["points"] if "kd_soft" in n)


def test_nothing_trains_twice():
    """The DAG's train jobs are the plan's runs: one per name, and a name is one config. Two sweeps
    that share a point (and the points equal to the config's own runs) add one run between them."""
    both = {"classify": {"sweeps": {"a": {"setting": "kd_soft.temperature", "values": [2, 8]},
                                    "b": {"setting": "kd_soft.temperature", "values": [8, 16]}}}}
    config = config_of(DEMO, {"classify": {"methods": ["alone", "kd_soft"]}}, both)
    own = plan.classify_runs(config, sweep_points=False)
    runs = plan.classify_runs(config)
    assert set(runs) - set(own) == {f"kd_soft-resnet8-from-resnet14-temperature{t}-s{s}" for t in (8, 16) for s in (0, 1)}
    shared = set(plan.sweep_runs(config)["a"]["points"]) & set(plan.sweep_runs(config)["b"]["points"])
    assert shared == {"kd_soft-resnet8-from-resnet14-temperature8-s0", "kd_soft-resnet8-from-resnet14-temperature8-s1"}
    assert plan.sweep_only_runs(config) == set(runs) - set(own)
    # training_runs (the rule's runs): no two names with the same config
    configs = [repr(sorted((k, repr(v)) for k, v in cfg.items() if k != "run")) for cfg in plan.training_runs(config).values()]
    assert len(configs) == len(set(configs))


def test_points_of_every_pair_and_a_method_without_a_teacher():
    pairs = {"classify": {"pairs": [{"teacher": "resnet14", "student": "resnet8"},
                                    {"teacher": "resnet20", "student": "resnet8"}],
                          "methods": ["alone", "kd_soft", "dml"]}}
    config = config_of(DEMO, pairs, sweep("train_subset", [50, 200], methods=["dml", "kd_soft"]))
    points = plan.sweep_runs(config)["s"]["points"]
    # dml has no teacher: one run per student architecture and seed, shared by both pairs
    assert [p for p in points if p.startswith("dml")] == ["dml-resnet8-subset50-s0", "dml-resnet8-s0",
                                                           "dml-resnet8-subset50-s1", "dml-resnet8-s1"]
    assert {p for p in points if p.startswith("kd_soft") and "subset50" in p} == {
        f"kd_soft-resnet8-from-{t}-subset50-s{s}" for t in ("resnet14", "resnet20") for s in (0, 1)}


def test_a_pair_own_setting_is_its_own_runs_value():
    """A pair that sets the swept setting itself: its own run is the point at its own value."""
    pairs = {"classify": {"pairs": [{"teacher": "resnet14", "student": "resnet8",
                                     "method_params": {"kd_soft": {"temperature": 4}}}]}}
    config = config_of(DEMO, pairs, sweep("kd_soft.temperature", [2, 4]))
    assert plan.sweep_runs(config)["s"]["points"][:2] == ["kd_soft-resnet8-from-resnet14-temperature2-s0",
                                                          "kd_soft-resnet8-from-resnet14-s0"]


def test_the_tiny_preset_holds_a_sweep_of_each_kind():
    config = config_of(DEMO, TINY)
    kinds = {s["key"] for s in plan.sweeps(config).values()}
    assert kinds == {"temperature", "train_subset"}
    assert sorted(plan.sweep_only_runs(config)) == ["alone-resnet8-subset50-s0", "kd_soft-resnet8-from-resnet14-subset50-s0",
                                                    "kd_soft-resnet8-from-resnet14-temperature1-s0"]


def test_sweeps_null_drops_the_sweeps_of_the_files_under_it():
    assert plan.sweeps(config_of(DEMO, TINY, {"classify": {"sweeps": None}})) == {}


# ---------------------------------------------------------------------------- validation

REFUSED = {
    "unknown setting": (sweep("kd_soft.temprature", [1, 2]), ["classify.sweeps.s.setting", "temprature", "temperature, alpha"]),
    "unknown method": (sweep("crd.beta", [1, 2]), ["classify.sweeps.s.setting", "'crd.beta'", "no registered method"]),
    "method not run": ({"classify": {**sweep("fitnet.beta", [1, 2])["classify"], "methods": ["alone", "kd_soft", "dkd"]}},
                       ["classify.sweeps.s.setting", "fitnet", "classify.methods"]),
    "value above its range": (sweep("kd_soft.alpha", [0.5, 1.5]), ["classify.sweeps.s.values[1]", "1.5", "maximum"]),
    "temperature zero": (sweep("kd_soft.temperature", [0, 2]), ["classify.sweeps.s.values[0]", "0"]),
    "integer setting given a fraction": (sweep("dkd.warmup", [0, 2.5]), ["classify.sweeps.s.values[1]", "2.5", "integer"]),
    "non-finite value": (sweep("kd_soft.temperature", [1, float("inf")]), ["classify.sweeps.s.values[1]", ".inf"]),
    "transfer set too large": (sweep("train_subset", [500, 60000]), ["classify.sweeps.s.values[1]", "60000", "50000"]),
    "transfer set not whole": (sweep("train_subset", [500, 1000.5]), ["classify.sweeps.s.values[1]", "1000.5"]),
    "transfer set method not run": (sweep("train_subset", [500, 1000], methods=["alone", "crd"]), ["classify.sweeps.s.methods", "crd"]),
    "methods on a setting sweep": (sweep("kd_soft.alpha", [0.5, 0.7], methods=["alone"]), ["classify.sweeps.s.methods", "remove"]),
    "one value": (sweep("kd_soft.alpha", [0.5]), ["values", "too short"]),
    "repeated value": (sweep("kd_soft.alpha", [0.5, 0.5]), ["values", "non-unique"]),
    "not a setting": (sweep("temperature", [1, 2]), ["setting", "temperature"]),
    "unknown key": (sweep("kd_soft.alpha", [0.5, 0.7], value=[1]), ["value"]),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_a_bad_sweep_is_refused_naming_the_key(case):
    overlay, words = REFUSED[case]
    message = refusal(overlay)
    assert message is not None, case
    for word in words:
        assert word in message, (case, word, message)


@pytest.mark.parametrize("name", ["Temperature", "t-1", "1t", "a.b", "x" * 33])
def test_a_sweep_name_is_a_lowercase_word(name):
    overlay = {"classify": {"sweeps": {name: {"setting": "kd_soft.alpha", "values": [0.5, 0.7]}}}}
    assert "Error validating config file" in refusal(overlay)


def test_good_sweeps_are_accepted():
    assert refusal(sweep("kd_soft.alpha", [0.5, 0.7, 0.9])) is None
    assert refusal(sweep("dkd.beta", [1, 2, 8]), {"classify": {"sweeps": {"n": {"setting": "train_subset",
                                                                                "values": [500, 50000]}}}}) is None
    assert refusal(DEMO, SWEEP_DEMO) is None
    assert refusal(DEMO, TINY) is None


# ---------------------------------------------------------------------------- the tiny build


@pytest.mark.pipeline
def test_the_tiny_build_holds_each_sweeps_table_chart_and_report_section(built_tiny):
    from pypdf import PdfReader

    tables = built_tiny / "results" / "tables"
    temperature = pd.read_csv(tables / "sweep_temperature.csv")
    points = temperature[temperature["role"] == "point"]
    assert points["value"].tolist() == [1, 2] and set(points["method"]) == {"kd_soft"}
    assert points["runs"].tolist() == ["kd_soft-resnet8-from-resnet14-temperature1-s0", "kd_soft-resnet8-from-resnet14-s0"]
    reference = temperature[temperature["role"] == "reference"]
    assert reference["runs"].tolist() == ["alone-resnet8-s0"]
    # the numbers are those of the runs' own metrics.json
    runs = pd.read_csv(tables / "kd_runs.csv").set_index("run")
    assert points["best_top1_mean"].iloc[1] == pytest.approx(runs.loc["kd_soft-resnet8-from-resnet14-s0", "best_top1"])
    assert reference["best_top1_mean"].iloc[0] == pytest.approx(runs.loc["alone-resnet8-s0", "best_top1"])
    subset = pd.read_csv(tables / "sweep_transfer_set.csv")
    assert sorted(zip(subset["method"], subset["value"])) == [("alone", 50), ("alone", 100), ("kd_soft", 50), ("kd_soft", 100)]
    # the KD tables read the config's own runs only
    assert not any("temperature1" in r or "subset50" in r for r in runs.index)
    for name in ("temperature", "transfer_set"):
        assert (built_tiny / "results" / "figures" / f"sweep_{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = " ".join(" ".join(page.extract_text() for page in PdfReader(built_tiny / "results" / "report.pdf").pages).split())
    assert "Sweep: temperature (kd_soft.temperature)" in text and "Sweep: transfer_set (train_subset)" in text
    # the contents name the three methods tiny runs, not every registered one
    registered = len(methods.METHODS)
    assert f"1. Knowledge distillation: 3 of the {registered} registered methods (student alone, KD soft, KD hard) ×" in text
