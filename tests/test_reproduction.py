"""The reproduction (gap) table: ours against every published number, from fake metrics.json files
with hand-computed means, sample sds and 95% t-intervals; the epoch conventions the sources state;
the report's sentences; the command and the rules that make the table."""

import json
import re
from pathlib import Path

import pandas as pd
import pytest
from matplotlib.backends.backend_pdf import PdfPages
from pypdf import PdfReader

from kdpipe import architectures, methods, plan, references
from kdpipe.cli import main
from kdpipe.report.reproduction import no_published_numbers, reproduction_section, sentence
from kdpipe.tables.reproduction import COLUMNS, reproduction_table, t_interval

ROOT = Path(__file__).resolve().parents[1]
T3 = 4.303  # two-sided 5% critical t for 2 degrees of freedom (three seeds)


def classify_metrics(tmp: Path, method: str, arch: str, seed: int, best: float, last: float, teacher: str = "",
                     dataset: str = "cifar100", **extra) -> Path:
    spec = None if method == "teacher" else methods.get(method)
    name = plan.teacher_run(arch, seed) if method == "teacher" else plan.student_run(method, arch, teacher, seed)
    cfg = {"run": name, "dataset": dataset, "dataset_source": dataset, "method": method, "arch": arch,
           "train": {"epochs": 240}}
    if spec and spec.needs_teacher:
        cfg["teacher"] = teacher
    m = {"run": name, "seed": seed, "config": cfg, "best": {"epoch": 200, "top1": best, "top5": best + 20},
         "last": {"epoch": 240, "top1": last, "top5": last + 20}, "train_images": 50000, "params": 1000,
         "wall_time_s": 1.0, "device": "cpu", "host": "h", "git_commit": "abc", **extra}
    path = tmp / dataset / "classify" / name / "metrics.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(m))
    return path


def self_distill_metrics(tmp: Path, method: str, seed: int, top1: dict, width: int = 64,
                         dataset: str = "cifar100") -> Path:
    """A multi-exit run whose exit k scored top1[k] at its best epoch and top1[k] - 1 at its last."""
    name = f"{method}-resnet18-s{seed}"
    cfg = {"run": name, "dataset": dataset, "dataset_source": dataset, "method": method, "arch": "resnet18",
           "width": width, "train": {"epochs": 200}, "self_distill": {}}
    exits = ["exit1", "exit2", "exit3", "exit4", "ensemble"]
    best = {"epoch": 190, **{f"top1_{e}": top1[e] for e in exits}, **{f"top5_{e}": 90.0 for e in exits}}
    last = {"epoch": 200, **{f"top1_{e}": top1[e] - 1 for e in exits}, **{f"top5_{e}": 89.0 for e in exits}}
    m = {"run": name, "seed": seed, "config": cfg, "best": best, "last": last, "train_images": 50000,
         "wall_time_s": 1.0, "device": "cpu", "host": "h", "git_commit": "abc",
         "exits": [{"exit": i, "params": 10, "macs": 20} for i in (1, 2, 3, 4)] + [{"exit": "ensemble", "params": 40, "macs": 80}]}
    path = tmp / dataset / "self_distill" / name / "metrics.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(m))
    return path


@pytest.fixture
def cifar_runs(tmp_path):
    """resnet56 -> resnet20 on CIFAR-100: the teacher, KD soft and KD hard over three seeds, the
    student alone and DKD over one; BYOT over two seeds and its baseline (no published number)."""
    classify = []
    for seed, (teacher, kd, kd_last, hard) in enumerate([(72.0, 69.0, 68.5, 60.0), (72.5, 69.2, 68.9, 61.0),
                                                        (73.0, 69.4, 69.0, 62.0)]):
        classify.append(classify_metrics(tmp_path, "teacher", "resnet56", seed, teacher, teacher - 0.5))
        classify.append(classify_metrics(tmp_path, "kd_soft", "resnet20", seed, kd, kd_last, teacher="resnet56"))
        classify.append(classify_metrics(tmp_path, "kd_hard", "resnet20", seed, hard, hard, teacher="resnet56"))
    classify.append(classify_metrics(tmp_path, "alone", "resnet20", 0, 68.0, 67.5))
    classify.append(classify_metrics(tmp_path, "dkd", "resnet20", 0, 71.0, 70.0, teacher="resnet56"))
    sd = [self_distill_metrics(tmp_path, "self_distill", seed, {"exit1": 67.0 + seed, "exit2": 74.0 + seed,
                                                               "exit3": 78.0 + seed, "exit4": 80.0 + seed,
                                                               "ensemble": 81.0})
          for seed in (0, 1)]
    sd.append(self_distill_metrics(tmp_path, "baseline", 0, dict.fromkeys(["exit1", "exit2", "exit3", "exit4", "ensemble"], 70.0)))
    return classify, sd


def test_t_interval_by_hand():
    s = t_interval([72.0, 72.5, 73.0])
    half = T3 * 0.5 / 3 ** 0.5  # sd 0.5, n 3: 1.2422
    assert s["n"] == 3 and s["mean"] == pytest.approx(72.5) and s["sd"] == pytest.approx(0.5)
    assert (s["ci_low"], s["ci_high"]) == pytest.approx((72.5 - half, 72.5 + half))
    one = t_interval([70.0])
    assert one["n"] == 1 and one["mean"] == 70.0 and pd.isna(one["sd"]) and pd.isna(one["ci_low"])


def test_table_rows_by_hand(cifar_runs, tmp_path):
    classify, sd = cifar_runs
    t = reproduction_table(classify, sd, out_csv=tmp_path / "reproduction.csv", headline_json=tmp_path / "r.json")
    assert list(t.columns) == COLUMNS
    rows = t.set_index("entry")
    # kd_hard has no published number; the BYOT baseline neither; the ensemble is not published.
    assert sorted(rows.index) == sorted(["teacher", "kd_soft", "alone", "dkd", "self_distill_exit1",
                                         "self_distill_exit2", "self_distill_exit3", "self_distill_exit4"])

    teacher = rows.loc["teacher"]  # 72.0, 72.5, 73.0: mean 72.5, sd 0.5; published 72.34
    half = T3 * 0.5 / 3 ** 0.5
    assert teacher["seeds"] == 3 and teacher["best_mean"] == pytest.approx(72.5) and teacher["best_sd"] == pytest.approx(0.5)
    assert (teacher["best_ci_low"], teacher["best_ci_high"]) == pytest.approx((72.5 - half, 72.5 + half))
    assert teacher["published_top1"] == 72.34 and teacher["best_diff"] == pytest.approx(0.16)
    assert teacher["best_inside"] == True  # noqa: E712 (a pandas boolean)
    assert teacher["subject"] == "resnet56 (teacher)" and teacher["group"] == "resnet56"

    kd = rows.loc["kd_soft"]  # best 69.0, 69.2, 69.4: mean 69.2, sd 0.2, half 0.4969; published 70.66 outside
    assert kd["best_mean"] == pytest.approx(69.2) and kd["best_sd"] == pytest.approx(0.2)
    assert kd["best_ci_high"] == pytest.approx(69.2 + T3 * 0.2 / 3 ** 0.5)
    assert kd["best_diff"] == pytest.approx(69.2 - 70.66) and kd["best_inside"] == False  # noqa: E712
    # last 68.5, 68.9, 69.0: mean 68.8, sd sqrt(0.07)
    assert kd["last_mean"] == pytest.approx(68.8) and kd["last_sd"] == pytest.approx(0.07 ** 0.5)
    assert kd["published_epoch"] == "not stated" and kd["compared_at"] == "best"
    assert kd["published_source"].startswith("RepDistiller README") and kd["group"] == "resnet56-to-resnet20"
    assert kd["subject"] == "resnet56 → resnet20, KD soft"

    alone = rows.loc["alone"]  # one seed: no sd, no interval, no inside
    assert alone["published_top1"] == 69.06 and alone["seeds"] == 1 and alone["best_diff"] == pytest.approx(68.0 - 69.06)
    assert pd.isna(alone["best_sd"]) and pd.isna(alone["best_inside"]) and alone["subject"] == "resnet20, student alone"
    assert rows.loc["dkd", "published_epoch"] == "best epoch" and rows.loc["dkd", "published_top1"] == 71.97

    exit4 = rows.loc["self_distill_exit4"]  # 80, 81: mean 80.5, sd 0.7071, t(1 dof) 12.706
    assert exit4["published_top1"] == 78.64 and exit4["published_epoch"] == "not stated"
    assert exit4["best_ci_low"] == pytest.approx(80.5 - 12.706 * 0.5 ** 0.5 / 2 ** 0.5)
    assert exit4["best_inside"] == True  # noqa: E712 (80.5 - 6.353 = 74.15 <= 78.64)
    assert exit4["last_mean"] == pytest.approx(79.5)

    # the CSV holds the same, and the headline (dvc metrics) the gap at the epoch compared
    again = pd.read_csv(tmp_path / "reproduction.csv").set_index("entry")
    assert again.loc["kd_soft", "best_ci_low"] == pytest.approx(kd["best_ci_low"])
    assert not again.loc["kd_soft", "best_inside"] and again.loc["teacher", "best_inside"]
    headline = json.loads((tmp_path / "r.json").read_text())
    assert headline["resnet56-to-resnet20"]["kd_soft"] == pytest.approx(
        {"published": 70.66, "ours": 69.2, "diff": 69.2 - 70.66, "seeds": 3})
    assert headline["resnet18"]["self_distill_exit1"]["published"] == 67.85


def test_a_narrow_byot_network_is_not_compared(tmp_path):
    sd = [self_distill_metrics(tmp_path, "self_distill", 0, dict.fromkeys(["exit1", "exit2", "exit3", "exit4", "ensemble"], 50.0), width=8)]
    assert reproduction_table([], sd, out_csv=tmp_path / "r.csv").empty


def test_sources_state_only_the_epoch_they_state():
    """Each registered source's convention is a field; RepDistiller's README names no epoch, mdistiller's
    tables report the best; no source's name claims an epoch of its own."""
    sources = [(a.reference_source, a.reference_epoch) for a in architectures.ARCHITECTURES.values() if a.references]
    sources += [(m.reference_source, m.reference_epoch) for m in methods.METHODS.values() if m.references]
    sources.append((references.BYOT_SOURCE, references.BYOT_EPOCH))
    for source, epoch in sources:
        assert epoch in references.EPOCH_CONVENTIONS, source
        assert not re.search(r"(best|last) epoch", source), source
        if source.startswith("RepDistiller"):
            assert epoch == references.NOT_STATED, source
    assert references.published("kd_soft", "resnet56", "resnet20").epoch == "not stated"
    assert references.published("teacher", "resnet56", "resnet20") == references.Published(
        72.34, architectures.REPDISTILLER, "not stated")
    assert references.published("dkd", "resnet32x4", "resnet8x4").epoch == "best epoch"
    assert references.published("dml", "resnet110", "resnet32").epoch == "not stated"
    assert references.published("kd_hard", "resnet56", "resnet20") is None
    assert references.BYOT_EPOCH == "not stated"


def test_an_imported_teacher_is_one_checkpoint_not_three_seeds(tmp_path):
    """Three seeds evaluating the same imported checkpoint (one sha256, one score) are one measurement:
    n=1, no sd, no interval, no inside, not '± 0.00, n=3' nor 'outside our interval'; two distinct
    checkpoints are n=2 with their interval."""
    imported = {"imported": True, "source": {"name": "mdistiller", "url": "https://x/t.tar", "member": "m"}}
    classify = [classify_metrics(tmp_path, "teacher", "resnet56", seed, 72.34, 72.34, checkpoint_sha256="a" * 64,
                                 **imported) for seed in (0, 1, 2)]
    classify += [classify_metrics(tmp_path, "kd_soft", "resnet20", seed, 70.0, 70.0, teacher="resnet56")
                 for seed in (0, 1, 2)]
    t = reproduction_table(classify, [], out_csv=tmp_path / "r.csv", headline_json=tmp_path / "r.json")
    teacher = t.set_index("entry").loc["teacher"]
    assert teacher["seeds"] == 1 and teacher["best_mean"] == pytest.approx(72.34)
    assert pd.isna(teacher["best_sd"]) and pd.isna(teacher["best_ci_low"]) and pd.isna(teacher["best_ci_high"])
    assert pd.isna(teacher["best_inside"]) and pd.isna(teacher["last_inside"])
    assert teacher["imported"] == True and teacher["imported_from"] == "mdistiller"  # noqa: E712
    assert t.set_index("entry").loc["kd_soft", "seeds"] == 3  # trained students still count their seeds
    assert json.loads((tmp_path / "r.json").read_text())["resnet56"]["teacher"]["seeds"] == 1
    assert sentence(teacher) == (
        "resnet56 teacher: imported checkpoint (mdistiller), measured here at 72.34 top-1, RepDistiller README "
        "72.34 (epoch not stated): 0.00 points apart; one checkpoint, no interval.")

    # a second checkpoint (another sha256) scoring 72.84 on seed 2: n=2, mean 72.59, sd 0.3536, t(1 dof) 12.706
    two = tmp_path / "two"
    classify = [classify_metrics(two, "teacher", "resnet56", seed, top1, top1, checkpoint_sha256=sha, **imported)
                for seed, top1, sha in ((0, 72.34, "a" * 64), (1, 72.34, "a" * 64), (2, 72.84, "b" * 64))]
    classify.append(classify_metrics(two, "kd_soft", "resnet20", 0, 70.0, 70.0, teacher="resnet56"))
    teacher = reproduction_table(classify, [], out_csv=two / "r.csv").set_index("entry").loc["teacher"]
    assert teacher["seeds"] == 2 and teacher["best_mean"] == pytest.approx(72.59)
    assert teacher["best_sd"] == pytest.approx(0.5 / 2 ** 0.5)
    assert teacher["best_ci_low"] == pytest.approx(72.59 - 12.706 * 0.25)
    assert teacher["best_inside"] == True  # noqa: E712


def _row(**kw) -> pd.Series:
    base = {"subject": "resnet56 → resnet20, KD soft", "seeds": 3, "compared_at": "best", "imported": False,
            "best_mean": 70.1, "best_sd": 0.3, "best_ci_low": 69.36, "best_ci_high": 70.85, "best_diff": 70.1 - 70.66,
            "best_inside": False, "last_mean": 69.8, "last_sd": 0.2, "last_ci_low": 69.3, "last_ci_high": 70.3,
            "last_diff": 69.8 - 70.66, "last_inside": False, "published_top1": 70.66,
            "published_source": "RepDistiller README (CIFAR-100, 240 epochs)", "published_epoch": "not stated"}
    return pd.Series({**base, **kw})


def test_sentence_format():
    assert sentence(_row()) == (
        "resnet56 → resnet20, KD soft: ours 70.10 ± 0.30 (best epoch, n=3; 95% CI 69.36–70.85), RepDistiller "
        "README 70.66 (epoch not stated): published number outside our interval; ours 0.56 points lower "
        "(our last epoch: 69.80 ± 0.20).")
    stated = _row(published_epoch="last epoch", compared_at="last", last_inside=True,
                  published_source="some paper (CIFAR-100)", subject="resnet56 (teacher)", imported=True)
    assert sentence(stated) == (
        "resnet56 (teacher) (imported): ours 69.80 ± 0.20 (last epoch, n=3; 95% CI 69.30–70.30), some paper 70.66 "
        "(last epoch): published number inside our interval; ours 0.86 points lower.")
    one = _row(seeds=1, best_sd=float("nan"), best_inside=float("nan"), best_mean=71.0, best_diff=71.0 - 70.66,
               published_epoch="best epoch")
    assert sentence(one) == ("resnet56 → resnet20, KD soft: ours 71.00 (best epoch, n=1; no interval from one seed), "
                             "RepDistiller README 70.66 (best epoch): one seed, so no interval to place the published "
                             "number in; ours 0.34 points higher.")


def _section_text(tmp_path, table, summaries) -> str:
    with PdfPages(tmp_path / "s.pdf") as pdf:
        reproduction_section(pdf, table, summaries)
    return " ".join("\n".join(p.extract_text() for p in PdfReader(tmp_path / "s.pdf").pages).split())


def test_a_synthetic_set_has_no_published_numbers(tmp_path):
    """The demo's synthetic set: the table has its columns and no row, the section one line naming the set."""
    classify = [classify_metrics(tmp_path, "teacher", "resnet56", 0, 50.0, 49.0, dataset="synthetic10"),
                classify_metrics(tmp_path, "kd_soft", "resnet20", 0, 40.0, 39.0, teacher="resnet56", dataset="synthetic10")]
    main(["tables-reproduction", "--classify-metrics", *map(str, classify), "--self-distill-metrics",
          "--out", str(tmp_path / "reproduction.csv"), "--headline", str(tmp_path / "r.json")])
    table = pd.read_csv(tmp_path / "reproduction.csv")
    assert table.empty and list(table.columns) == COLUMNS
    assert json.loads((tmp_path / "r.json").read_text()) == {}
    line = no_published_numbers(["synthetic10"])
    assert line == ("No published numbers to compare with: every published number kdpipe knows is on CIFAR-100, "
                    "and this build trained on synthetic10.")
    text = _section_text(tmp_path, table, [pd.DataFrame({"dataset": ["synthetic10"]})])
    assert "4 Reproduction" in text and line in text and "95% CI" not in text


def test_the_command_writes_the_table_and_the_report_quotes_it(cifar_runs, tmp_path):
    classify, sd = cifar_runs
    out = tmp_path / "tables" / "reproduction.csv"
    out.parent.mkdir()
    main(["tables-reproduction", "--classify-metrics", *map(str, classify), "--self-distill-metrics", *map(str, sd),
          "--out", str(out)])
    table = pd.read_csv(out)
    assert len(table) == 8
    text = _section_text(tmp_path, table, [])
    for _, r in table.iterrows():
        assert sentence(r) in text, r["entry"]  # every sentence, whole, as written into the CSV's numbers
    assert "published number outside our interval; ours 1.46 points lower" in text  # kd_soft, by hand


def _rule(name: str) -> str:
    text = (ROOT / "workflow" / "rules" / "report.smk").read_text()
    block = re.search(rf"^rule {name}:\n(.*?)(?=^rule |\Z)", text, flags=re.M | re.S)
    assert block, name
    return block.group(1)


def test_rules_make_the_table_and_the_report_reads_it():
    rule = _rule("tables_reproduction")
    assert 'family_outputs("classify", "metrics.json")' in rule and 'family_outputs("self_distill", "metrics.json")' in rule
    assert "kdpipe tables-reproduction" in rule and "log:" in rule and "benchmark:" in rule
    assert '"results/tables/reproduction.csv"' in rule and "--out {output.table:q}" in rule
    assert '"results/tables/reproduction.csv"' in _rule("report")
    assert "rules.tables_reproduction.output" in (ROOT / "Snakefile").read_text()
    from kdpipe import dvc_stages

    assert "tables_reproduction" in dvc_stages.TABLE_RULES
    assert "results/tables/reproduction_metrics.json" in dvc_stages.HEADLINE_METRICS
    assert "kdpipe.tables.reproduction" in dvc_stages.ENTRY_MODULES["tables"]
