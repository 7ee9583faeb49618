"""The method registry drives the schema, the plan, the classifier, the tables, the chart and the
report: a method registered here (and only here) appears in all of them. Config errors for unknown
methods and bad settings, checked in-process against the generated schema (no Snakemake start)."""

import json
from dataclasses import replace
from pathlib import Path

import matplotlib.colors
import pandas as pd
import pytest
import torch
import yaml
from pypdf import PdfReader
from snakemake.exceptions import WorkflowError
from snakemake.utils import update_config

from kdpipe import losses, methods, plan
from kdpipe.models import build_model
from kdpipe.config_checks import ConfigError, check_config
from kdpipe.config_schema import config_schema, validate_config

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"


def merged_config(*overlays: dict, preset: bool = True) -> dict:
    """config.yaml (+ the demo preset) + overlays, merged as Snakemake merges --configfile files."""
    config: dict = {}
    for f in ["config.yaml", *(["presets/demo.yaml"] if preset else [])]:
        update_config(config, yaml.safe_load((ROOT / f).read_text()))
    for overlay in overlays:
        update_config(config, overlay)
    return config


def valid(config: dict) -> dict:
    validate_config(config, SCHEMA)
    check_config(config)
    return config


@pytest.fixture
def toy_method(monkeypatch):
    """A method added to the registry for one test, and removed after it: nothing else is edited."""
    toy = methods.Method(
        "toy_kd", "toy distillation", "#a1b2c3", "CE + 0·toy", needs_teacher=True,
        step=lambda o, p: losses.cross_entropy(o.logits * p["gain"], o.targets),
        params={"gain": methods.Param(1.5, {"type": "number", "exclusiveMinimum": 0}, "logit gain")},
        references={("resnet56", "resnet20"): 12.34}, reference_source="the toy paper (CIFAR-100)")
    monkeypatch.setitem(methods.METHODS, "toy_kd", toy)
    return toy


# ---- the registry itself ------------------------------------------------------------------------


def test_every_method_is_complete():
    colours = [m.colour for m in methods.METHODS.values()] + [methods.TEACHER["colour"]]
    assert len(set(colours)) == len(colours), "each method needs its own colour"
    assert "teacher" not in methods.METHODS  # a role, not a method
    assert methods.METHODS["alone"].needs_teacher is False
    for name, m in methods.METHODS.items():
        assert m.name == name and m.label and m.formula
        assert matplotlib.colors.is_color_like(m.colour)
        assert callable(m.step)
        assert set(m.features) <= {"student", "teacher"}
        if "teacher" in m.features:
            assert m.needs_teacher
        for key, param in m.params.items():
            assert "type" in param.schema and param.help, (name, key)
        for (teacher, student), value in m.references.items():
            assert 0 < value < 100 and m.reference_source


def test_published_references_match_references_md():
    ref = {name: m.references for name, m in methods.METHODS.items()}
    assert ref["dkd"] == {("resnet56", "resnet20"): 71.97, ("resnet32x4", "resnet8x4"): 76.32, ("wrn_40_2", "wrn_16_2"): 76.24}
    assert ref["fitnet"] == {("resnet56", "resnet20"): 69.21, ("resnet32x4", "resnet8x4"): 73.50, ("wrn_40_2", "wrn_16_2"): 73.58}
    assert ref["at"] == {("resnet56", "resnet20"): 70.55, ("resnet32x4", "resnet8x4"): 73.44, ("wrn_40_2", "wrn_16_2"): 74.08}
    assert ref["kd_soft"][("resnet56", "resnet20")] == 70.66 and ref["alone"] == {}  # alone: the architecture's
    wrn = {name: r.get(("wrn_40_2", "wrn_16_2")) for name, r in ref.items()}
    assert wrn == {"alone": None, "label_smooth": None, "kd_soft": 74.92, "kd_hard": None, "dkd": 76.24, "fitnet": 73.58, "at": 74.08,
                   "dml": None}
    assert methods.reference("dml", "resnet110", "resnet32") == 71.19  # a resnet32 peer, whatever the teacher
    assert methods.reference("dml", "resnet56", "resnet20") is None
    assert methods.METHODS["dml"].students == 2 and not methods.METHODS["dml"].needs_teacher


def test_teacher_and_alone_references_are_the_architectures():
    from kdpipe.architectures import REPDISTILLER
    from kdpipe.references import published_top1

    assert published_top1("teacher", "wrn_40_2", "wrn_16_2") == (75.61, REPDISTILLER)
    assert published_top1("alone", "wrn_40_2", "wrn_16_2") == (73.26, REPDISTILLER)
    assert published_top1("alone", "resnet110", "resnet32") == (71.14, REPDISTILLER)  # whichever the teacher
    assert published_top1("teacher", "resnet14", "resnet8") == (None, "")
    assert published_top1("kd_soft", "wrn_40_2", "wrn_16_2") == (74.92, methods.get("kd_soft").reference_source)
    assert published_top1("kd_hard", "wrn_40_2", "wrn_16_2") == (None, "")


def test_shipped_configs_run_every_method_and_validate():
    for preset in (False, True):
        config = valid(merged_config(preset=preset))
        assert config["classify"]["methods"] == list(methods.METHODS)


# ---- the schema is generated from the registry --------------------------------------------------


def test_schema_lists_the_registry(toy_method):
    classify = config_schema(SCHEMA)["properties"]["classify"]["properties"]
    assert classify["methods"]["items"]["enum"] == list(methods.METHODS)
    assert "toy_kd" in classify["methods"]["items"]["enum"]
    assert set(classify["method_params"]["properties"]) == set(methods.METHODS)
    assert set(classify["method_params"]["properties"]["dkd"]["properties"]) == {"temperature", "alpha", "beta", "warmup"}
    assert classify["method_params"]["properties"]["toy_kd"]["properties"]["gain"]["exclusiveMinimum"] == 0
    pair = classify["pairs"]["items"]["properties"]["method_params"]
    assert set(pair["properties"]) == set(methods.METHODS)


BAD = {
    "unknown method": ({"classify": {"methods": ["alone", "dkdd"]}}, "dkdd"),
    "no method": ({"classify": {"methods": []}}, "methods"),
    "method listed twice": ({"classify": {"methods": ["alone", "dkd", "dkd"]}}, "methods"),
    "settings of an unknown method": ({"classify": {"method_params": {"crd": {"nce_k": 4096}}}}, "crd"),
    "unknown setting": ({"classify": {"method_params": {"dkd": {"betta": 2}}}}, "betta"),
    "negative weight": ({"classify": {"method_params": {"at": {"beta": -1}}}}, "beta"),
    "warm-up not an integer": ({"classify": {"method_params": {"dkd": {"warmup": 2.5}}}}, "warmup"),
    "hint stage out of range": ({"classify": {"method_params": {"fitnet": {"stage": 4}}}}, "stage"),
    "KD alpha above 1": ({"classify": {"method_params": {"kd_soft": {"alpha": 1.5}}}}, "kd_soft"),
    "a pair's bad setting": ({"classify": {"pairs": [{"teacher": "resnet14", "student": "resnet8",
                                                      "method_params": {"dkd": {"temperature": 0}}}]}}, "temperature"),
    "a pair's unknown setting": ({"classify": {"pairs": [{"teacher": "resnet14", "student": "resnet8",
                                                          "method_params": {"fitnet": {"hint": 2}}}]}}, "hint"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_method_config_names_the_key(case):
    overlay, key = BAD[case]
    with pytest.raises(WorkflowError) as err:
        validate_config(merged_config(overlay), SCHEMA)
    message = str(err.value)
    assert "Error validating config file" in message
    assert key in message.split("Error validating config file", 1)[1], message


def test_settings_for_a_method_not_run_are_refused():
    config = merged_config({"classify": {"methods": ["alone", "kd_soft"], "pairs": [
        {"teacher": "resnet14", "student": "resnet8", "method_params": {"dkd": {"beta": 2}}}]}})
    validate_config(config, SCHEMA)  # the schema allows it: the check does not
    with pytest.raises(ConfigError, match=r"classify\.pairs\[0\]\.method_params\.dkd: dkd is not in classify\.methods"):
        check_config(config)


def test_untaught_method_settings_must_agree_across_pairs(monkeypatch):
    solo = methods.Method("solo", "solo", "#010203", "CE",
                          step=lambda o, p: losses.cross_entropy(o.logits, o.targets),
                          params={"k": methods.Param(1, {"type": "integer"}, "a setting")})
    monkeypatch.setitem(methods.METHODS, "solo", solo)
    pairs = [{"teacher": "resnet14", "student": "resnet8"},
             {"teacher": "resnet20", "student": "resnet8", "method_params": {"solo": {"k": 2}}}]
    config = merged_config({"classify": {"methods": ["alone", "kd_soft", "solo"], "pairs": pairs}})
    validate_config(config, SCHEMA)
    with pytest.raises(ConfigError, match=r"pairs\[1\]\.method_params\.solo: solo trains resnet8 once"):
        check_config(config)


def test_a_method_with_a_teacher_is_needed():
    config = merged_config({"classify": {"methods": ["alone", "dml"]}})
    validate_config(config, SCHEMA)
    with pytest.raises(ConfigError, match=r"classify\.methods: none of \['alone', 'dml'\] learns from a teacher"):
        check_config(config)


# ---- the plan ------------------------------------------------------------------------------------


def test_settings_resolve_registry_then_config_then_pair():
    config = valid(merged_config({"classify": {"pairs": [
        {"teacher": "resnet14", "student": "resnet8", "method_params": {"dkd": {"beta": 5}}},
        {"teacher": "resnet20", "student": "resnet8"}]}}))
    runs = plan.classify_runs(config)
    first, second = runs["dkd-resnet8-from-resnet14-s0"], runs["dkd-resnet8-from-resnet20-s0"]
    # temperature, beta and warm-up from the demo preset, alpha from config.yaml, the first pair's own beta
    assert first["method_params"] == {"temperature": 2, "alpha": 1, "beta": 5, "warmup": 1}
    assert second["method_params"] == {"temperature": 2, "alpha": 1, "beta": 2, "warmup": 1}
    # what the registry alone gives (no config layer sets fitnet's stage)
    assert runs["fitnet-resnet8-from-resnet14-s0"]["method_params"]["stage"] == methods.get("fitnet").params["stage"].default
    assert "method_params" not in runs["alone-resnet8-s0"]
    # methods without a teacher run once per student architecture and seed, shared by the pairs
    assert {n for n in runs if n.startswith(("alone-", "dml-"))} == {
        f"{m}-resnet8-s{s}" for m in ("alone", "dml") for s in config["classify"]["seeds"]}
    assert "teacher" not in runs["dml-resnet8-s0"]


def test_registered_method_is_planned(toy_method):
    config = valid(merged_config({"classify": {"methods": ["alone", "toy_kd"],
                                               "method_params": {"toy_kd": {"gain": 2.0}}}}))
    runs = plan.classify_runs(config)
    toy = runs["toy_kd-resnet8-from-resnet14-s0"]
    assert toy["method_params"] == {"gain": 2.0} and toy["teacher_run"] == "teacher-resnet14-s0"
    with pytest.raises(WorkflowError, match="gain"):
        validate_config(merged_config({"classify": {"method_params": {"toy_kd": {"gain": 0}}}}), SCHEMA)


# ---- tables, chart and report from metrics.json files -------------------------------------------


def fake_metrics(tmp: Path, method: str, arch: str, seed: int, top1: float, teacher: str = "", **extra) -> Path:
    spec = None if method == "teacher" else methods.get(method)
    name = plan.teacher_run(arch, seed) if method == "teacher" else plan.student_run(method, arch, teacher, seed)
    cfg = {"run": name, "dataset": "cifar100", "dataset_source": "cifar100", "method": method, "arch": arch,
           "train": {"epochs": 3}}
    if spec and spec.needs_teacher:
        cfg["teacher"] = teacher
    if spec and spec.params:
        cfg["method_params"] = spec.defaults()
    m = {"run": name, "family": "classify", "seed": seed, "config": cfg, "best": {"epoch": 3, "top1": top1, "top5": top1 + 10},
         "last": {"epoch": 3, "top1": top1 - 1, "top5": top1 + 9}, "train_images": 100, "params": 1000,
         "wall_time_s": 1.0, "device": "cpu", "host": "h", "git_commit": "abc", **extra}
    path = tmp / name / "metrics.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(m))
    return path


@pytest.fixture
def built_tables(tmp_path, toy_method):
    """Teacher, alone, toy_kd and dml over 3 seeds on resnet56 -> resnet20, tables built."""
    from kdpipe.tables.kd import kd_tables

    files = []
    for seed, (t, a, toy, d1, d2) in enumerate([(72, 60, 62, 61, 59), (73, 61, 63.5, 60, 62), (71, 62, 63, 64, 61)]):
        files.append(fake_metrics(tmp_path, "teacher", "resnet56", seed, t))
        files.append(fake_metrics(tmp_path, "alone", "resnet20", seed, a))
        files.append(fake_metrics(tmp_path, "toy_kd", "resnet20", seed, toy, teacher="resnet56"))
        files.append(fake_metrics(tmp_path, "dml", "resnet20", seed, d1,
                                  best_top1_s2={"epoch": 2, "top1_s2": d2, "top5_s2": d2 + 10},
                                  last={"epoch": 3, "top1": d1 - 1, "top5": d1 + 9, "top1_s2": d2 - 2, "top5_s2": d2 + 8}))
    out = tmp_path / "tables"
    out.mkdir()
    kd_tables(files, runs_csv=out / "kd_runs.csv", summary_csv=out / "kd_summary.csv",
              headline_json=out / "kd_metrics.json")
    return out


def test_tables_have_a_row_per_method_and_student(built_tables):
    runs = pd.read_csv(built_tables / "kd_runs.csv")
    assert len(runs) == 3 * 5  # teacher, alone, toy_kd, and mutual learning's two students
    s = pd.read_csv(built_tables / "kd_summary.csv").set_index("entry")
    assert list(s.index) == ["teacher", "alone", "dml", "dml_s2", "toy_kd"]  # registry order (toy_kd added last)
    assert s.loc["toy_kd", "label"] == "toy distillation" and s.loc["dml_s2", "label"] == "mutual learning (2)"
    assert s.loc["toy_kd", "best_top1_mean"] == pytest.approx((62 + 63.5 + 63) / 3)
    # paired over seeds: toy - alone = 2, 2.5, 1 -> mean 1.8333, std 0.7638; better on 3 of 3
    assert s.loc["toy_kd", "best_top1_diff_mean"] == pytest.approx(11 / 6)
    assert s.loc["toy_kd", "best_top1_diff_std"] == pytest.approx(0.763763, abs=1e-6)
    assert s.loc["toy_kd", "best_top1_seeds_better"] == 3
    assert s.loc["toy_kd", "best_top1_verdict"] == "larger than spread"
    assert s.loc["toy_kd", "best_top1_t_critical"] == pytest.approx(4.303)
    # dml - alone = 1, -1, 2: mean 0.667 within its std 1.528
    assert s.loc["dml", "best_top1_verdict"] == "within spread"
    # the second student's own best epoch and last epoch
    assert s.loc["dml_s2", "best_top1_mean"] == pytest.approx((59 + 62 + 61) / 3)
    assert s.loc["dml_s2", "last_top1_mean"] == pytest.approx((57 + 60 + 59) / 3)
    # references: published numbers in their own column, only where they exist
    assert s.loc["toy_kd", "reference_top1"] == 12.34 and s.loc["toy_kd", "reference_source"] == "the toy paper (CIFAR-100)"
    assert s.loc["teacher", "reference_top1"] == 72.34 and s.loc["alone", "reference_top1"] == 69.06
    assert pd.isna(s.loc["dml", "reference_top1"])
    headline = json.loads((built_tables / "kd_metrics.json").read_text())["resnet56-to-resnet20"]
    assert set(headline) == {"teacher", "alone", "toy_kd", "dml", "dml_s2"}


def test_chart_uses_the_registry_colours(built_tables, tmp_path, monkeypatch):
    from kdpipe.figures import kd as kd_figures

    figures = []
    monkeypatch.setattr(kd_figures.plt, "close", figures.append)
    summary = pd.read_csv(built_tables / "kd_summary.csv")
    kd_figures.kd_accuracy_bars(summary, tmp_path / "bars.png")
    colours = {matplotlib.colors.to_hex(p.get_facecolor()) for p in figures[0].axes[0].patches}
    assert {"#a1b2c3", methods.colour("dml"), methods.colour("alone"), methods.colour("teacher")} <= colours
    labels = [t.get_text() for t in figures[0].axes[0].get_xticklabels()]
    assert any(label.startswith("toy distillation") for label in labels)


def test_report_shows_every_method(built_tables, tmp_path):
    from matplotlib.backends.backend_pdf import PdfPages

    from kdpipe.figures.kd import kd_figures
    from kdpipe.report.kd import kd_section

    summary = pd.read_csv(built_tables / "kd_summary.csv")
    histories = []
    for run in pd.read_csv(built_tables / "kd_runs.csv")["run"].unique():
        path = tmp_path / "h" / run / "history.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"epoch": [1, 2, 3], "top1": [10, 20, 30], "top1_s2": [11, 21, 31]}).to_csv(path, index=False)
        histories.append(path)
    kd_figures(built_tables / "kd_summary.csv", built_tables / "kd_runs.csv", histories, out_dir=tmp_path / "fig")
    with PdfPages(tmp_path / "kd.pdf") as pdf:
        kd_section(pdf, summary, tmp_path / "fig")
    text = "\n".join(p.extract_text() for p in PdfReader(tmp_path / "kd.pdf").pages)
    flat = " ".join(text.split())
    lines = text.splitlines()
    for _, row in summary.iterrows():
        rows = [line for line in lines if line.startswith(row["label"] + " ")]
        assert f"{row['best_top1_mean']:.2f}" in rows[0] and f"{row['last_top1_mean']:.2f}" in rows[1], row["entry"]
    toy = summary.set_index("entry").loc["toy_kd"]
    assert f"+{toy['best_top1_diff_mean']:.2f} ± {toy['best_top1_diff_std']:.2f} (3/3)" in flat
    assert "toy distillation beat the student alone: +1.83 points, larger than its spread across seeds" in flat
    assert "within its spread across seeds" in flat  # mutual learning
    assert "12.34" in flat and "Reference, not measured here" in flat and "the toy paper" in flat
    assert "toy distillation: CE + 0·toy at gain=1.5" in flat
    assert "With 3 seeds that is weak evidence" in flat and "4.30" in flat


def test_taught_methods_are_read_against_every_control(tmp_path, toy_method, monkeypatch):
    """Paired by seed against the student alone and, for a method with a teacher, against each control
    of the registry (label smoothing, and a toy control registered here: nothing names them)."""
    from matplotlib.backends.backend_pdf import PdfPages

    from kdpipe.report.kd import controls_page, controls_table, verdicts
    from kdpipe.tables.kd import kd_summary, kd_run_rows

    toy_ctrl = methods.Method("toy_ctrl", "toy control", "#0a0b0c", "CE, a toy control", control=True,
                              step=lambda o, p: losses.cross_entropy(o.logits, o.targets))
    monkeypatch.setitem(methods.METHODS, "toy_ctrl", toy_ctrl)
    assert methods.controls() == ["label_smooth", "toy_ctrl"]
    assert methods.compared_with("toy_kd") == ["alone", "label_smooth", "toy_ctrl"]
    assert methods.compared_with("dml") == ["alone"] and methods.compared_with("label_smooth") == ["alone"]
    files = []
    for seed, (a, ls, ctrl, toy) in enumerate([(60, 61, 62, 62), (61, 63, 62, 63.5), (62, 62, 62, 63)]):
        files += [fake_metrics(tmp_path, "teacher", "resnet56", seed, 70),
                  fake_metrics(tmp_path, "alone", "resnet20", seed, a),
                  fake_metrics(tmp_path, "label_smooth", "resnet20", seed, ls),
                  fake_metrics(tmp_path, "toy_ctrl", "resnet20", seed, ctrl),
                  fake_metrics(tmp_path, "toy_kd", "resnet20", seed, toy, teacher="resnet56")]
    s = kd_summary(kd_run_rows(files)).set_index("entry")
    toy = s.loc["toy_kd"]
    # toy - label smoothing = 1, 0.5, 1: mean 5/6, std sqrt(1/12), t = 5.0 > 4.303
    assert toy["vs_label_smooth_best_top1_diff_mean"] == pytest.approx(5 / 6)
    assert toy["vs_label_smooth_best_top1_diff_std"] == pytest.approx(12 ** -0.5)
    assert toy["vs_label_smooth_best_top1_paired_t"] == pytest.approx(5.0)
    assert toy["vs_label_smooth_best_top1_seeds_better"] == 3
    assert toy["vs_label_smooth_best_top1_verdict"] == "larger than spread"
    assert toy["vs_label_smooth_last_top1_diff_mean"] == pytest.approx(5 / 6)  # last = best - 1 for all
    # toy - toy control = 0, 1.5, 1: mean 5/6, std 0.7638; better on 2 of 3
    assert toy["vs_toy_ctrl_best_top1_diff_mean"] == pytest.approx(5 / 6)
    assert toy["vs_toy_ctrl_best_top1_diff_std"] == pytest.approx(0.763763, abs=1e-6)
    assert toy["vs_toy_ctrl_best_top1_seeds_better"] == 2
    # ... and against the student alone as before: 2, 2.5, 1
    assert toy["best_top1_diff_mean"] == pytest.approx(11 / 6)
    # a control is read against the student alone only (1, 2, 0: mean 1 = std 1), never against a control
    assert s.loc["label_smooth", "best_top1_diff_mean"] == pytest.approx(1.0)
    assert s.loc["label_smooth", "best_top1_verdict"] == "within spread"
    assert pd.isna(s.loc["label_smooth", "vs_label_smooth_best_top1_diff_mean"])
    assert pd.isna(s.loc["label_smooth", "vs_toy_ctrl_best_top1_diff_mean"])
    assert pd.isna(s.loc["teacher", "vs_label_smooth_best_top1_diff_mean"])
    # the report: one sentence per control, a table of the taught methods
    lines = verdicts(s.reset_index()).splitlines()
    assert "toy distillation beat the control label smoothing (no teacher): +0.83 points, larger than its spread " \
           "across seeds (± 0.29); better on 3 of 3 seeds." in lines
    assert any(line.startswith("toy distillation beat the control toy control (no teacher): +0.83") for line in lines)
    assert any(line.startswith("label smoothing beat the student alone: +1.00") for line in lines)
    columns, rows = controls_table(s.reset_index())
    assert columns[1:] == ["Δ vs alone\nbest", "Δ vs label smoothing\nbest", "Δ vs label smoothing\nlast",
                           "Δ vs toy control\nbest", "Δ vs toy control\nlast"]
    assert rows == [["toy distillation", "+1.83 ± 0.76 (3/3)", "+0.83 ± 0.29 (3/3)", "+0.83 ± 0.29 (3/3)",
                     "+0.83 ± 0.76 (2/3)", "+0.83 ± 0.76 (2/3)"]]
    with PdfPages(tmp_path / "controls.pdf") as pdf:
        controls_page(pdf, s.reset_index())
    text = " ".join(PdfReader(tmp_path / "controls.pdf").pages[0].extract_text().split())
    assert "Against the controls" in text and "+0.83 ± 0.29 (3/3)" in text and "Yuan et al. 2020" in text
    assert "resnet56 → resnet20" in text


def test_without_a_control_run_the_report_has_no_controls_page(built_tables, tmp_path):
    from matplotlib.backends.backend_pdf import PdfPages

    from kdpipe.report.kd import controls_page

    with PdfPages(tmp_path / "none.pdf") as pdf:
        controls_page(pdf, pd.read_csv(built_tables / "kd_summary.csv"))
    assert not (tmp_path / "none.pdf").exists() or len(PdfReader(tmp_path / "none.pdf").pages) == 0


# ---- the classifier trains every registered method ----------------------------------------------


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from kdpipe.data.synthetic import prepare_synthetic

    root = tmp_path_factory.mktemp("tiny")
    prepare_synthetic({"num_train": 80, "num_test": 20, "num_classes": 4, "seed": 0},
                      train_out=root / "train.pt", test_out=root / "test.pt")
    return root


def train_run(root: Path, method: str, teacher: Path | None = None, params: dict | None = None, epochs: int = 1):
    from kdpipe.training.run import train

    cfg = {"family": "classify", "dataset": "tiny", "dataset_source": "synthetic", "device": "cpu", "augment": False,
           "run": f"{method}-s0", "role": "student", "method": method, "arch": "resnet8", "seed": 0,
           "train": {"epochs": epochs, "batch_size": 40, "lr": 0.05}, "train_subset": None}
    if params is not None:
        cfg["method_params"] = params
    out = root / method
    out.mkdir(exist_ok=True)
    metrics = train(cfg, train_path=root / "train.pt", test_path=root / "test.pt", teacher_path=teacher,
                    model_path=out / "model.pt", metrics_path=out / "metrics.json",
                    history_path=out / "history.csv", resume_path=out / "resume.pt")
    return metrics, out


@pytest.fixture(scope="module")
def tiny_teacher(tiny_data):
    _, out = train_run(tiny_data, "teacher")
    return out / "model.pt"


@pytest.mark.parametrize("method", [m for m in methods.METHODS if m != "alone"])
def test_every_method_trains_and_serves_a_plain_student(tiny_data, tiny_teacher, method):
    from kdpipe.training.classify import load_model_file

    spec = methods.get(method)
    metrics, out = train_run(tiny_data, method, tiny_teacher if spec.needs_teacher else None,
                             spec.defaults() if spec.params else None, epochs=2)
    history = pd.read_csv(out / "history.csv")
    assert len(history) == 2 and history["loss"].notna().all()
    # model.pt is the student alone: FitNets' regressor and mutual learning's peer are not in it
    model = load_model_file(out / "model.pt", torch.device("cpu"))
    saved = torch.load(out / "model.pt", weights_only=True)
    assert set(saved["state_dict"]) == set(build_model("resnet8", 4).state_dict())
    assert metrics["params"] == sum(p.numel() for p in model.parameters())
    assert metrics["students"] == spec.students
    assert not (out / "resume.pt").exists()


def test_mutual_learning_reports_both_students(tiny_data):
    metrics, out = train_run(tiny_data, "dml", epochs=3)
    history = pd.read_csv(out / "history.csv")
    assert {"ce", "kl", "ce_s2", "kl_s2", "top1", "top1_s2", "top5_s2"} <= set(history.columns)
    best2 = metrics["best_top1_s2"]
    assert best2["top1_s2"] == history["top1_s2"].max() and best2["epoch"] == int(history.loc[history["top1_s2"].idxmax(), "epoch"])
    assert "top1_s2" in metrics["last"]
    assert (history["ce"] != history["ce_s2"]).any()  # two students, initialised differently


def test_dkd_warmup_follows_the_training_loop_epoch(tiny_data, tiny_teacher):
    """The loop tells the family its epoch; DKD's logged terms are unweighted, so its total is
    ce + w (alpha tckd + beta nckd) only with the right w per epoch (checked on epoch means)."""
    metrics, out = train_run(tiny_data, "dkd", tiny_teacher, {"temperature": 4, "alpha": 1.0, "beta": 8.0, "warmup": 2},
                             epochs=3)
    h = pd.read_csv(out / "history.csv")
    for _, row in h.iterrows():
        w = min(row["epoch"] / 2, 1.0)
        assert row["loss"] == pytest.approx(row["ce"] + w * (row["tckd"] + 8 * row["nckd"]), rel=1e-4)


def test_only_an_epoch_dependent_loss_makes_a_graphed_step_capture_again():
    """A CUDA-graphed step captures again when a family's graph_key changes (kdpipe.training.graphs):
    for DKD that is its warm-up weight, which changes for `warmup` epochs and then stays 1."""
    dkd = methods.get("dkd")
    keys = [dkd.epoch_key(e, {"warmup": 4}) for e in range(8)]
    assert keys == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0, 1.0, 1.0]
    assert dkd.epoch_key(0, {"warmup": 0}) == 1.0
    # The others say they read no epoch (tests/test_capturable.py holds every method to its claim).
    assert [n for n, m in methods.METHODS.items() if m.epoch_key is not methods.epoch_independent] == ["dkd"]


def test_a_method_that_declares_nothing_is_captured_again_every_epoch(toy_method):
    """Safe by default: without an epoch_key the classifier's graph key is the epoch itself; the
    teacher's cross-entropy reads none, and an epoch_key is asked with the run's settings."""
    from kdpipe.training.classify import Classifier

    data = (torch.zeros(4, 3, 8, 8, dtype=torch.uint8), torch.arange(4))
    teacher = build_model("resnet8", 4)

    def key_at(method, epoch, kd=None):
        family = Classifier(build_model("resnet8", 4), data, data, method=method, batch_size=4, kd=kd,
                            teacher=teacher if method != "teacher" else None, device=torch.device("cpu"))
        family.epoch = epoch
        return family.graph_key()

    assert toy_method.epoch_key is None
    assert [key_at("toy_kd", e) for e in (0, 1, 7)] == [0, 1, 7]
    assert [key_at("teacher", e) for e in (0, 1)] == [None, None]
    assert [key_at("kd_soft", e) for e in (0, 1)] == [None, None]
    assert [key_at("dkd", e, {"warmup": 2}) for e in (0, 1, 2, 3)] == [0.5, 1.0, 1.0, 1.0]


def _stem(stride: int, padding: int):
    """resnet8 with another stem: its stage maps are another size than resnet8's on the same images."""
    def factory(num_classes):
        model = build_model("resnet8", num_classes)
        model.conv1 = torch.nn.Conv2d(3, 16, kernel_size=3, stride=stride, padding=padding, bias=False)
        return model
    return factory


def test_attention_transfer_pairs_only_maps_that_pool_by_integer_factors(monkeypatch, tmp_path):
    """On 8x8 images resnet8's stages are 8, 4, 2 wide: a student at 4, 2, 1 is pooled (kernel 2);
    one at 6, 3, 2 is refused when the family is built, in one line naming the pair."""
    from kdpipe import architectures
    from kdpipe.errors import InputError, PairError
    from kdpipe.training.classify import make_classifier

    monkeypatch.setitem(architectures.ARCHITECTURES, "half8", replace(architectures.get("resnet8"), build=_stem(2, 1)))
    monkeypatch.setitem(architectures.ARCHITECTURES, "crop8", replace(architectures.get("resnet8"), build=_stem(1, 0)))
    teacher = tmp_path / "teacher.pt"
    torch.save({"arch": "resnet8", "num_classes": 4, "state_dict": build_model("resnet8", 4).state_dict()}, teacher)
    split = {"images": torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8), "labels": torch.arange(4),
             "classes": ["a", "b", "c", "d"]}

    def build(student):
        cfg = {"arch": student, "teacher": "resnet8", "method": "at", "method_params": methods.get("at").defaults(),
               "train": {"batch_size": 4}, "augment": False, "train_subset": None, "seed": 0}
        return make_classifier(cfg, split, split, torch.device("cpu"), teacher)[0]

    family = build("half8")
    _, terms = family.loss(next(iter(family.train_batches(torch.Generator().manual_seed(0)))))
    assert set(terms) == {"ce", "at1", "at2", "at3"} and all(torch.isfinite(t) for t in terms.values())
    with pytest.raises(PairError) as err:
        build("crop8")
    assert isinstance(err.value, InputError)  # the command line prints it as `kdpipe: <message>`
    assert str(err.value) == (
        "method 'at' cannot pair teacher resnet8 with student crop8: stage 1 maps are 6x6 (student) and 8x8 "
        "(teacher), and attention transfer pools the larger by an integer factor only; drop this pair from "
        "classify.pairs or at from classify.methods")


@pytest.mark.parametrize("method, terms", [("kd_soft", {"ce", "kl"}), ("fitnet", {"ce", "hint"}),
                                           ("at", {"ce", "at1", "at2", "at3"})])
def test_the_wrn_pair_trains_with_feature_methods(tmp_path, method, terms):
    """wrn_40_2 -> wrn_16_2 (both widen factor 2: stages 32, 64, 128 channels on maps 32, 16, 8 for
    both): the family builds (attention transfer's pairing check passes, FitNets'
    regressor maps stage 2), and two SGD steps on random images move the student, finitely."""
    from kdpipe.training.classify import make_classifier

    teacher = tmp_path / "teacher.pt"
    torch.manual_seed(0)
    torch.save({"arch": "wrn_40_2", "num_classes": 4, "state_dict": build_model("wrn_40_2", 4).state_dict()}, teacher)
    split = {"images": torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8), "labels": torch.arange(4),
             "classes": ["a", "b", "c", "d"]}
    cfg = {"arch": "wrn_16_2", "teacher": "wrn_40_2", "method": method,
           "method_params": methods.get(method).defaults(), "train": {"batch_size": 2}, "augment": False,
           "train_subset": None, "seed": 0}
    family = make_classifier(cfg, split, split, torch.device("cpu"), teacher)[0]
    if method == "fitnet":  # stage 2: student 64 channels -> teacher 64 channels at 16 x 16
        assert tuple(family.extras["regressor"](torch.zeros(1, 64, 16, 16)).shape) == (1, 64, 16, 16)
    before = [p.detach().clone() for p in family.served_model.parameters()]
    optimiser = torch.optim.SGD(family.model.parameters(), lr=0.01)
    for batch in list(family.train_batches(torch.Generator().manual_seed(0)))[:2]:
        total, got = family.loss(batch)
        assert set(got) == terms and torch.isfinite(total) and all(torch.isfinite(t) for t in got.values())
        optimiser.zero_grad()
        total.backward()
        optimiser.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, family.served_model.parameters()))
