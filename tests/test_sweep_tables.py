"""Sweeps as config axes (classify.sweeps): the per-sweep table, its line chart and its report section."""

import json
import math
from pathlib import Path

import matplotlib.colors
import pandas as pd
import pytest
from pypdf import PdfReader

from kdpipe import methods
from kdpipe.errors import InputError
from kdpipe.tables.sweep import read_sweep_table, sweep_table, sweep_tables
from report_stubs import skip_sections, write_stub_tables

NAN = float("nan")


def fake_metrics(tmp: Path, method: str, arch: str, seed: int, best: float, last: float, *, teacher: str = "",
                 params: dict | None = None, train_subset: int | None = 100, tag: str = "") -> Path:
    """A classifier run's metrics.json with the fields the KD tables read (tests/test_methods.py)."""
    name = f"{method}-{arch}" + (f"-from-{teacher}" if teacher else "") + f"{tag}-s{seed}"
    cfg = {"run": name, "dataset": "d", "dataset_source": "synthetic", "method": method, "arch": arch,
           "train": {"epochs": 3}, "train_subset": train_subset}
    if teacher:
        cfg["teacher"] = teacher
    if params is not None:
        cfg["method_params"] = params
    m = {"run": name, "family": "classify", "seed": seed, "config": cfg,
         "best": {"epoch": 3, "top1": best, "top5": best + 10}, "last": {"epoch": 3, "top1": last, "top5": last + 9},
         "train_images": train_subset or 4000, "params": 1000, "wall_time_s": 1.0, "device": "cpu", "host": "h",
         "git_commit": "abc"}
    if method == "dml":  # student 2 is never read by a sweep: numbers far off student 1's
        m["best_top1_s2"] = {"epoch": 2, "top1_s2": 10.0, "top5_s2": 20.0}
        m["last"].update(top1_s2=11.0, top5_s2=21.0)
    path = tmp / name / "metrics.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(m))
    return path


# (best, last) top-1 per seed 0, 1, 2
KD_T1 = [(60, 59), (62, 60), (61, 61)]  # best 61 ± 1, last 60 ± 1
KD_T4 = [(64, 63), (66, 63), (68, 63)]  # best 66 ± 2, last 63 ± 0
ALONE = [(55, 50), (57, 52), (59, 57)]  # best 57 ± 2, last 53 ± 3.6056 (var (9 + 1 + 16) / 2 = 13)


def temperature_files(tmp):
    points = [fake_metrics(tmp, "kd_soft", "resnet8", s, b, la, teacher="resnet14", tag=f"-T{t}",
                           params={"temperature": t, "alpha": 0.9})
              for t, runs in ((4, KD_T4), (1, KD_T1)) for s, (b, la) in enumerate(runs)]
    reference = [fake_metrics(tmp, "alone", "resnet8", s, b, la) for s, (b, la) in enumerate(ALONE)]
    return points, reference


@pytest.fixture
def temperature(tmp_path):
    points, reference = temperature_files(tmp_path)
    out = tmp_path / "tables" / "sweep_temperature.csv"
    out.parent.mkdir()
    sweep_tables("temperature", "kd_soft.temperature", points, reference, out_csv=out)
    return out


def test_setting_sweep_table_means_stds_and_reference(temperature):
    table = read_sweep_table(temperature)
    assert list(table["role"]) == ["reference", "point", "point"]  # teacher "" first, then the values in order
    ref, t1, t4 = (r for _, r in table.iterrows())
    assert (ref["method"], ref["teacher"], ref["student"], ref["label"]) == ("alone", "", "resnet8", "student alone")
    assert math.isnan(ref["value"]) and ref["seeds"] == 3
    assert ref["best_top1_mean"] == pytest.approx(57) and ref["best_top1_std"] == pytest.approx(2)
    assert ref["last_top1_mean"] == pytest.approx(53) and ref["last_top1_std"] == pytest.approx(13 ** 0.5)
    assert (t1["value"], t1["teacher"], t1["label"], t1["seeds"]) == (1, "resnet14", "KD soft", 3)
    assert (t1["best_top1_mean"], t1["best_top1_std"]) == pytest.approx((61, 1))
    assert (t1["last_top1_mean"], t1["last_top1_std"]) == pytest.approx((60, 1))
    assert (t4["value"], t4["best_top1_mean"], t4["best_top1_std"]) == pytest.approx((4, 66, 2))
    assert (t4["last_top1_mean"], t4["last_top1_std"]) == pytest.approx((63, 0))
    assert t4["runs"] == ";".join(f"kd_soft-resnet8-from-resnet14-T4-s{s}" for s in range(3))
    assert set(table["sweep"]) == {"temperature"} and set(table["setting"]) == {"kd_soft.temperature"}
    # integer values are written as integers, the reference's left empty
    lines = temperature.read_text().splitlines()
    assert [line.split(",")[7] for line in lines] == ["value", "", "1", "4"]


def test_transfer_set_sweep_every_method_is_a_line_one_seed(tmp_path):
    files = [fake_metrics(tmp_path, "kd_soft", "resnet8", 0, 70.5, 70, teacher="resnet14", train_subset=400,
                          params={"temperature": 4, "alpha": 0.9}),
             fake_metrics(tmp_path, "kd_soft", "resnet8", 0, 65, 64, teacher="resnet14", train_subset=50,
                          params={"temperature": 4, "alpha": 0.9}, tag="-n50"),
             fake_metrics(tmp_path, "alone", "resnet8", 0, 50, 49, train_subset=50, tag="-n50"),
             fake_metrics(tmp_path, "dml", "resnet8", 0, 52, 51, train_subset=50, tag="-n50")]
    table = sweep_table("transfer_set", "train_subset", files, [])
    assert list(zip(table["teacher"], table["method"], table["value"])) == [
        ("", "alone", 50), ("", "dml", 50), ("resnet14", "kd_soft", 50), ("resnet14", "kd_soft", 400)]
    assert set(table["role"]) == {"point"}
    dml = table.iloc[1]
    assert dml["best_top1_mean"] == 52 and dml["last_top1_mean"] == 51 and dml["label"] == "mutual learning (1)"
    assert table["best_top1_std"].isna().all() and list(table["seeds"]) == [1, 1, 1, 1]


@pytest.mark.parametrize("method, params, teacher", [("kd_hard", {"alpha": 0.9}, "resnet14"), ("alone", None, "")])
def test_a_point_without_the_setting_names_file_and_setting(tmp_path, method, params, teacher):
    points, _ = temperature_files(tmp_path)
    wrong = fake_metrics(tmp_path, method, "resnet8", 0, 50, 50, teacher=teacher, params=params, tag="-wrong")
    with pytest.raises(InputError, match="method_params.temperature") as err:
        sweep_table("temperature", "kd_soft.temperature", [*points, wrong], [])
    assert str(wrong) in str(err.value) and "kd_soft.temperature" in str(err.value)


def test_a_transfer_set_point_without_a_subset_and_an_unknown_setting(tmp_path):
    full = fake_metrics(tmp_path, "alone", "resnet8", 0, 50, 50, train_subset=None)
    with pytest.raises(InputError, match="no train_subset") as err:
        sweep_table("n", "train_subset", [full], [])
    assert str(full) in str(err.value)
    with pytest.raises(InputError, match="'kd_soft.temprature'.*known: train_subset, label_smooth.epsilon"):
        sweep_table("t", "kd_soft.temprature", [full], [])


# --- the sentence per line ------------------------------------------------------------------------

def points(*value_mean_std_seeds, teacher="resnet14", method="kd_soft", setting="kd_soft.temperature"):
    return pd.DataFrame([{"sweep": "t", "setting": setting, "teacher": teacher, "student": "resnet8",
                          "method": method, "label": methods.label(method), "role": "point", "value": v,
                          "seeds": n, "best_top1_mean": mean, "best_top1_std": std}
                         for v, mean, std, n in value_mean_std_seeds])


def test_sentence_clear_winner_beyond_the_spread():
    from kdpipe.report.sweep import sweep_sentence

    # best 4 (66 ± 2), worst 1 (61 ± 1): 5 points > 2 + 1
    rows = points((1, 61.0, 1.0, 3), (2, 65.0, 0.5, 3), (4, 66.0, 2.0, 3))
    assert sweep_sentence(rows) == (
        "KD soft, resnet14 → resnet8: best at kd_soft.temperature = 4 with 66.00 ± 2.00% over 3 seeds; 5.00 points "
        "above the worst value (kd_soft.temperature = 1, 61.00 ± 1.00%), which exceeds the seed spread (3.00, the "
        "sum of their stds).")


def test_sentence_within_the_spread():
    from kdpipe.report.sweep import sweep_sentence

    # best 2 (65 ± 1.5), worst 8 (63 ± 1): 2 points < 1.5 + 1
    rows = points((8, 63.0, 1.0, 3), (2, 65.0, 1.5, 3), (4, 64.0, 0.2, 3))
    sentence = sweep_sentence(rows)
    assert sentence.startswith("KD soft, resnet14 → resnet8: best at kd_soft.temperature = 2 with 65.00 ± 1.50%")
    assert sentence.endswith("2.00 points above the worst value (kd_soft.temperature = 8, 63.00 ± 1.00%), which is "
                             "within the seed spread (2.50, the sum of their stds): these seeds do not tell the "
                             "values apart.")


def test_sentence_one_seed_has_no_spread():
    from kdpipe.report.sweep import sweep_sentence

    rows = points((50, 40.0, NAN, 1), (400, 55.5, NAN, 1), teacher="", method="alone", setting="train_subset")
    assert sweep_sentence(rows) == (
        "student alone, resnet8: best at train_subset = 400 with 55.50% over 1 seed; 15.50 points above the worst "
        "value (train_subset = 50, 40.00%), with one seed there is no seed spread to compare the difference with.")


def test_sentence_a_tie_names_no_best_value():
    from kdpipe.report.sweep import sweep_sentence

    rows = points((1, 10.0, NAN, 1), (2, 10.0, NAN, 1))  # chance accuracy at both values
    assert sweep_sentence(rows) == ("KD soft, resnet14 → resnet8: every value of kd_soft.temperature gives 10.00% "
                                    "(mean over 1 seed): the values are not told apart.")


# --- the chart ------------------------------------------------------------------------------------

def test_chart_transfer_set_is_log_scaled_with_ticks_at_the_values(tmp_path):
    from kdpipe.figures.sweep import sweep_figure

    table = pd.concat([points((50, 40.0, 1.0, 2), (400, 55.5, 2.0, 2), teacher="", method="alone",
                              setting="train_subset"),
                       points((50, 45.0, 1.0, 2), (400, 60.0, 2.0, 2), setting="train_subset")])
    fig = sweep_figure(table, tmp_path / "fig" / "sweep_n.png")
    assert (tmp_path / "fig" / "sweep_n.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    (ax, ) = fig.axes
    assert ax.get_xscale() == "log" and ax.get_xlabel() == "transfer-set size (images)"
    assert list(ax.get_xticks()) == [50, 400] and [t.get_text() for t in ax.get_xticklabels()] == ["50", "400"]
    assert ax.get_title() == "resnet14 → resnet8"  # the student alone drawn on the pair with its student
    lines = {line.get_label(): matplotlib.colors.to_hex(line.get_color()) for line in ax.get_lines()}
    assert lines == {"student alone": methods.colour("alone"), "KD soft": methods.colour("kd_soft")}
    assert fig._suptitle.get_text() == "t"


def test_chart_setting_sweep_is_linear_with_its_reference(temperature, tmp_path):
    from kdpipe.figures.sweep import sweep_figure

    fig = sweep_figure(read_sweep_table(temperature), tmp_path / "sweep_temperature.png")
    (ax, ) = fig.axes
    assert ax.get_xscale() == "linear" and ax.get_xlabel() == "kd_soft.temperature"
    assert list(ax.get_xticks()) == [1, 4]
    ref = [line for line in ax.get_lines() if line.get_label() == "student alone (reference)"]
    assert len(ref) == 1 and ref[0].get_linestyle() == "--" and list(ref[0].get_ydata()) == [57, 57]
    kd = [line for line in ax.get_lines() if line.get_label() == "KD soft"][0]
    assert list(kd.get_xdata()) == [1, 4] and list(kd.get_ydata()) == [61, 66]
    band = [p for p in ax.patches]  # axhspan: mean ± std of the student alone, 55 to 59
    assert len(band) == 1 and band[0].get_y() == pytest.approx(55) and band[0].get_height() == pytest.approx(4)


# --- the report section ---------------------------------------------------------------------------

def _pdf_text(path) -> str:
    return " ".join("\n".join(p.extract_text() for p in PdfReader(path).pages).split())


def test_contents_name_the_methods_the_report_shows():
    """The title page lists the methods of section 1 in registry order, as many as the preset ran."""
    from kdpipe import methods
    from kdpipe.report.build import contents

    few = contents(["kd_hard", "teacher", "alone"]).splitlines()[1]
    assert few.startswith(f"1. Knowledge distillation: 2 of the {len(methods.METHODS)} registered methods "
                          "(student alone, KD hard) × every teacher→student pair")
    every = contents(list(methods.METHODS), ["temperature"]).splitlines()
    labels = ", ".join(m.label for m in methods.METHODS.values())
    assert every[1].startswith(f"1. Knowledge distillation: every registered method ({labels}) ×")
    assert every[2].startswith("1s. Sweeps (temperature)") and every[3].startswith("2. Self-distillation")


def test_report_builds_with_one_sweep(temperature, tmp_path, monkeypatch):
    from kdpipe.cli import main

    figures = tmp_path / "figures"
    assert main(["figures-sweep", "--table", str(temperature), "--out", str(figures / "sweep_temperature.png")]) == 0
    tables = temperature.parent
    write_stub_tables(tables)
    skip_sections(monkeypatch)
    plain = tmp_path / "plain.pdf"
    assert main(["report", "--name", "tiny", "--tables", str(tables), "--figures", str(figures),
                 "--out", str(plain)]) == 0
    assert "Sweep" not in _pdf_text(plain) and len(PdfReader(plain).pages) == 1  # no sweeps: the title page only
    out = tmp_path / "report.pdf"
    assert main(["report", "--name", "tiny", "--tables", str(tables), "--figures", str(figures), "--out", str(out),
                 "--sweep", "temperature"]) == 0
    text = _pdf_text(out)
    assert "Sweep: temperature (kd_soft.temperature)" in text
    assert "1s. Sweeps (temperature)" in text
    assert ("Reference: student alone (resnet8), which does not read kd_soft.temperature: 57.00 ± 2.00% over 3 "
            "seeds.") in text
    assert ("KD soft, resnet14 → resnet8: best at kd_soft.temperature = 4 with 66.00 ± 2.00% over 3 seeds; 5.00 "
            "points above the worst value (kd_soft.temperature = 1, 61.00 ± 1.00%), which exceeds the seed "
            "spread") in text


def test_report_names_a_missing_sweep_table(tmp_path):
    from kdpipe.report.sweep import load_sweeps

    with pytest.raises(InputError, match="sweep_nope.csv does not exist: make it with `kdpipe tables-sweep`"):
        load_sweeps(["nope"], tmp_path, tmp_path)
    with pytest.raises(InputError, match="sweep name '../x'"):
        load_sweeps(["../x"], tmp_path, tmp_path)


def test_cli_tables_sweep_writes_the_table_and_reports_a_bad_point(tmp_path, capsys):
    from kdpipe.cli import main

    pts, reference = temperature_files(tmp_path)
    out = tmp_path / "sweep_temperature.csv"
    assert main(["tables-sweep", "--name", "temperature", "--setting", "kd_soft.temperature", "--metrics",
                 *map(str, pts), "--reference", *map(str, reference), "--out", str(out)]) == 0
    assert list(read_sweep_table(out)["role"]) == ["reference", "point", "point"]
    assert main(["tables-sweep", "--name", "temperature", "--setting", "kd_soft.temperature", "--metrics",
                 *map(str, reference), "--out", str(tmp_path / "bad.csv")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"kdpipe: {reference[0]}: its run config (method 'alone') has no method_params.temperature")
    assert not (tmp_path / "bad.csv").exists()
