"""Report section 1: distillation methods × teacher→student pairs, then one chart page per pair.

What the methods are (labels, formulas, published numbers) comes from the registry through the
tables; nothing here names a method (the baseline is ``methods.BASELINE``, "the student alone"; the
controls are ``methods.controls()``).
"""

from pathlib import Path

import pandas as pd

from kdpipe import methods
from kdpipe.report.cost import COST_HEADER, COST_NOTE, cost_cell, has_cost
from kdpipe.report.layout import fmt, heading, image, page, save, table, text


def _num(value) -> bool:
    return value is not None and not pd.isna(value)


def diff_cell(row: pd.Series, when: str, prefix: str = "") -> str:
    """The paired difference from the student alone (from a control: ``prefix`` ``vs_<control>_``):
    mean ± std over seeds, seeds where it was better."""
    key = f"{prefix}{when}_top1"
    if not _num(row.get(f"{key}_diff_mean")):
        return "–"
    mean, std = row[f"{key}_diff_mean"], row[f"{key}_diff_std"]
    spread = f"{mean:+.2f}" if pd.isna(std) else f"{mean:+.2f} ± {std:.2f}"
    return f"{spread} ({int(row[f'{key}_seeds_better'])}/{int(row[f'{key}_paired_seeds'])})"


def methods_table(summary: pd.DataFrame, when: str) -> tuple[list[str], list[list[str]]]:
    """Rows: the teacher and each method's students; per pair three columns: measured mean ± std,
    the paired difference from the student alone, the published number (labelled a reference)."""
    pairs = list(dict.fromkeys(summary["pair"]))
    costed = has_cost(summary)  # and a fourth: one model's cost, the gain per hour (kdpipe.tables.cost)
    columns = ["method"]
    for pair in pairs:
        columns += [f"{when} top-1\n{pair.replace('-to-', '→')}", "Δ vs alone\n(better/seeds)", "reference\n(published)"]
        columns += [COST_HEADER] if costed else []
    rows = []
    for entry in dict.fromkeys(summary["entry"]):
        entry_rows = summary[summary["entry"] == entry]
        row = [entry_rows["label"].iloc[0]]
        for pair in pairs:
            r = entry_rows[entry_rows["pair"] == pair]
            if r.empty:
                row += ["–"] * (4 if costed else 3)
                continue
            r = r.iloc[0]
            ref = f"{r['reference_top1']:.2f}" if _num(r.get("reference_top1")) else "–"
            imported = " (imported)" if isinstance(r.get("imported_from"), str) and r["imported_from"] else ""
            row += [fmt(r[f"{when}_top1_mean"], r[f"{when}_top1_std"]) + imported, diff_cell(r, when), ref]
            row += [cost_cell(r, when)] if costed else []
        rows.append(row)
    return columns, rows


def _verdict(r: pd.Series, prefix: str, against: str) -> str | None:
    key = f"{prefix}best_top1"
    if not _num(r.get(f"{key}_diff_mean")):
        return None
    n = int(r[f"{key}_paired_seeds"])
    diff = r[f"{key}_diff_mean"]
    word = "beat" if diff > 0 else "did NOT beat"
    if r[f"{key}_verdict"] == "larger than spread":
        how = f"larger than its spread across seeds (± {r[f'{key}_diff_std']:.2f})"
    elif r[f"{key}_verdict"] == "within spread":
        how = f"within its spread across seeds (± {r[f'{key}_diff_std']:.2f})"
    else:
        how = "one seed, no spread to compare with"
    return f"{r['label']} {word} {against}: {diff:+.2f} points, {how}; better on {int(r[f'{key}_seeds_better'])} of {n} seeds."


def verdicts(rows: pd.DataFrame) -> str:
    """One plain sentence per method of a pair's rows: the paired difference at the best epoch, and
    whether it is larger than its spread across seeds; a method with a teacher gets one more per
    control (methods.compared_with), which says whether the teacher added more than the control."""
    lines = []
    for _, r in rows.iterrows():
        for ref in methods.compared_with(r["method"]):
            if ref == methods.BASELINE:
                line = _verdict(r, "", "the student alone")
            else:
                line = _verdict(r, f"vs_{ref}_", f"the control {methods.label(ref)} (no teacher)")
            if line:
                lines.append(line)
    return "\n".join(lines)


def ran_controls(summary: pd.DataFrame) -> list[str]:
    """The controls (methods.controls()) some method of the summary was read against."""
    return [c for c in methods.controls() if f"vs_{c}_best_top1_diff_mean" in summary.columns
            and summary[f"vs_{c}_best_top1_diff_mean"].notna().any()]


def controls_table(rows: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """One pair's rows: each method with a teacher, its paired difference from the student alone at the
    best epoch and from each control that ran at the best and last epoch: what the teacher adds beyond it."""
    controls = ran_controls(rows)
    columns = ["method", "Δ vs alone\nbest", *(f"Δ vs {methods.label(c)}\n{when}" for c in controls
                                                 for when in ("best", "last"))]
    taught = rows[rows["method"].map(lambda m: m != "teacher" and methods.get(m).needs_teacher)]
    return columns, [[r["label"], diff_cell(r, "best"),
                      *(diff_cell(r, when, f"vs_{c}_") for c in controls for when in ("best", "last"))]
                     for _, r in taught.iterrows()]


def controls_page(pdf, summary: pd.DataFrame) -> None:
    """A page reading every method with a teacher against the controls, a table per pair; none when
    no control ran."""
    controls = ran_controls(summary)
    if not controls:
        return
    fig = page()
    heading(fig, "1.0 Against the controls (no teacher)")
    why = "; ".join(f"{methods.label(c)}, {methods.get(c).formula}" for c in controls)
    y = text(fig, 0.91, "Does the teacher add more than a regulariser? A control trains the student without a teacher, "
                        "with a regulariser a teacher's gain might amount to (" + why + "). Each cell: the "
                        "method minus the control (or the student alone), paired by seed, mean ± std over seeds "
                        "(seeds where the method was better / seeds); a method that does not beat the control "
                        "shows no gain that needs its teacher.", size=8, width=120)
    for pair, rows in summary.groupby("pair", sort=False):
        columns, cells = controls_table(rows)
        if not cells:
            continue
        r = rows.iloc[0]
        y = text(fig, y - 0.005, f"{r['teacher']} → {r['student']}", size=9, weight="bold")
        height = 0.0195 * (len(cells) + 2)  # the header holds two lines
        table(fig, [0.03, y - height, 0.94, height], columns, cells, size=7)
        y -= height + 0.02
    save(pdf, fig)


def caveat(summary: pd.DataFrame) -> str:
    n = int(summary["seeds"].min())
    if n < 2:
        return "One seed per run: there is no spread across seeds, so no difference here can be told from noise."
    from kdpipe.tables.kd import t_critical

    return (f"How little this proves: each difference is paired by seed (same data order and same initial student "
            f"as the student alone of that seed), and 'larger than its spread' means |mean| > std of the per-seed "
            f"differences. With {n} seeds that is weak evidence: a paired t-test at the 5% level would need "
            f"|mean| / (std / √{n}) > {t_critical(n):.2f}.")


def teacher_setup(teacher: pd.DataFrame) -> str:
    """How the teachers came about: trained here, or imported (their top-1 is still measured here)."""
    if teacher.empty:
        return ""
    # A column read back from CSV with no imported teacher is all NaN (float): compare as text.
    imported = teacher.get("imported_from", pd.Series("", index=teacher.index)).astype(object).fillna("")
    sources = [s for s in imported.unique() if s]
    trained = teacher[imported == ""]
    out = (f"Teachers trained on {int(trained['train_images'].iloc[0]):,} images for "
           f"{int(trained['epochs'].iloc[0])} epochs. " if not trained.empty else "")
    if sources:
        out += (f"Teachers marked (imported) were not trained here: their published checkpoints ({'; '.join(sources)}) "
                "were evaluated on this test set, and that measured top-1 is printed beside the published number. ")
    return out


def kd_section(pdf, summary: pd.DataFrame, figures_dir: Path) -> None:
    first = summary.iloc[0]
    teacher = summary[summary["method"] == "teacher"]
    students = summary[summary["method"] != "teacher"]
    fig = page()
    heading(fig, "1 Knowledge distillation: methods × teacher→student pairs")
    described = []
    for method in dict.fromkeys(students["method"]):
        spec = methods.get(method)
        settings = students.loc[students["method"] == method, "settings"].dropna().unique()
        settings = f" at {'; '.join(settings)}" if len(settings) else ""
        described.append(f"{spec.label}: {spec.formula}{settings}")
    setup = (
        f"Data: {first['dataset']} ({first['dataset_source']}). "
        + teacher_setup(teacher)
        + f"Students trained on {int(students['train_images'].iloc[0]):,} images (their transfer set) for "
        f"{int(students['epochs'].iloc[0])} epochs. Student seed s learns from teacher seed s and starts from the "
        f"same initial weights as the student alone of seed s. Methods — " + " | ".join(described) + ". "
        f"Figures: test top-1 in %, mean ± std over {int(summary['seeds'].min())} seed(s). 'Reference' columns are "
        f"published CIFAR-100 numbers (240 epochs), not measured here; they apply only to CIFAR-100 with the "
        f"paper's recipe."
    )
    y = text(fig, 0.91, setup, size=8, width=120)
    n_rows = summary["entry"].nunique() + 1
    height = 0.0195 * n_rows
    for when in ("best", "last"):
        y = text(fig, y - 0.005, f"{when.capitalize()} epoch", size=9, weight="bold")
        columns, rows = methods_table(summary, when)
        table(fig, [0.03, y - height, 0.94, height], columns, rows, size=6.5)
        y -= height + 0.03
    if has_cost(summary):
        y = text(fig, y, COST_NOTE, size=8, width=120)
    y = text(fig, y, caveat(summary), size=8, width=120, style="italic")
    refs = students[students["reference_source"].fillna("") != ""]["reference_source"].unique()
    if len(refs):
        text(fig, y - 0.005, "Reference, not measured here — " + "; ".join(refs) + ".", size=8, width=120,
             style="italic")
    save(pdf, fig)
    controls_page(pdf, summary)
    for i, (pair, rows) in enumerate(summary.groupby("pair", sort=False), start=1):
        fig = page()
        r = rows.iloc[0]
        heading(fig, f"1.{i} {r['teacher']} → {r['student']}: every method")
        y = text(fig, 0.91, "Result (best epoch, paired over seeds):\n" + verdicts(rows), size=8, width=115,
                 weight="bold")
        y = text(fig, y - 0.005, "Bars: best- and last-epoch top-1 per method (mean ± std over seeds), in the colours "
                                 "of the method registry; dashed: the student alone. Curves: test top-1 per epoch.",
                 size=8, width=120)
        image(fig, [0.05, 0.4, 0.9, y - 0.41], figures_dir / f"kd-{pair}-accuracy.png")
        image(fig, [0.05, 0.02, 0.9, 0.37], figures_dir / f"kd-{pair}-curves.png")
        save(pdf, fig)
