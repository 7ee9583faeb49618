"""Report section 1: knowledge distillation, teacher -> student, per pair."""

from pathlib import Path

import pandas as pd

from kdpipe.references import REPDISTILLER_SOURCE, kd_reference
from kdpipe.report.layout import fmt, heading, image, page, save, table, text, within_spread


def kd_verdict(rows: pd.DataFrame) -> str:
    by = rows.set_index("method")
    if "alone" not in by.index:
        return ""
    alone = by.loc["alone"]
    out = []
    for method, label in (("kd_soft", "KD with soft targets"), ("kd_hard", "KD with hard targets")):
        if method not in by.index:
            continue
        diff = by.loc[method, "best_top1_mean"] - alone["best_top1_mean"]
        if diff > 0:
            strength = within_spread(diff, by.loc[method, "best_top1_std"], alone["best_top1_std"])
            out.append(f"{label} beat the student trained alone by {diff:+.2f} points of best-epoch top-1{strength}.")
        else:
            out.append(f"{label} did NOT beat the student trained alone ({diff:+.2f} points of best-epoch top-1).")
    return " ".join(out)


def kd_section(pdf, summary: pd.DataFrame, figures_dir: Path) -> None:
    for i, (pair, rows) in enumerate(summary.groupby("pair", sort=False), start=1):
        first = rows.iloc[0]
        by = rows.set_index("method")
        teacher = by.loc["teacher"] if "teacher" in by.index else None
        student = by.loc["alone"] if "alone" in by.index else rows.iloc[-1]
        fig = page()
        heading(fig, f"1.{i} Knowledge distillation: {first['teacher']} → {first['student']}")
        setup = (
            f"Data: {first['dataset']} ({first['dataset_source']}). "
            + (f"The teacher {first['teacher']} ({int(teacher['params']):,} parameters) trained on "
               f"{int(teacher['train_images']):,} images for {int(teacher['epochs'])} epochs. " if teacher is not None else "")
            + f"Each student {first['student']} ({int(student['params']):,} parameters) trained on "
            f"{int(student['train_images']):,} images (its transfer set) for {int(student['epochs'])} epochs: "
            f"alone with cross-entropy; KD soft with (1-a)·CE + a·T²·KL(teacher_T ‖ student_T) at "
            f"T = {by.loc['kd_soft', 'temperature'] if 'kd_soft' in by.index else '–'}, "
            f"a = {by.loc['kd_soft', 'alpha'] if 'kd_soft' in by.index else '–'}; KD hard with "
            f"(1-a)·CE(labels) + a·CE(teacher's argmax) at a = {by.loc['kd_hard', 'alpha'] if 'kd_hard' in by.index else '–'}. "
            f"Student seed s learns from teacher seed s. Figures are test top-1 / top-5 accuracy in %, "
            f"mean ± std over {int(rows['seeds'].min())} seed(s), at the best epoch and at the last epoch."
        )
        y = text(fig, 0.91, setup, size=9.5, width=100)
        columns = ["method", "model", "params", "seeds", "best top-1", "last top-1", "best top-5", "last top-5"]
        table_rows = [
            [r["label"], r["arch"], f"{int(r['params']):,}", str(int(r["seeds"])),
             fmt(r["best_top1_mean"], r["best_top1_std"]), fmt(r["last_top1_mean"], r["last_top1_std"]),
             fmt(r["best_top5_mean"], r["best_top5_std"]), fmt(r["last_top5_mean"], r["last_top5_std"])]
            for _, r in rows.iterrows()
        ]
        table(fig, [0.05, y - 0.11, 0.9, 0.1], columns, table_rows)
        y -= 0.12
        y = text(fig, y, "Result: " + kd_verdict(rows), size=10, width=95, weight="bold")
        ref = kd_reference(first["dataset_source"], first["teacher"], first["student"])
        if ref:
            y = text(fig, y - 0.005, (
                f"Reference, not measured here — {REPDISTILLER_SOURCE}: teacher {ref['teacher']:.2f}, "
                f"student alone {ref['alone']:.2f}, KD {ref['kd_soft']:.2f}."), size=9, width=100, style="italic")
        image(fig, [0.08, 0.36, 0.84, y - 0.38], figures_dir / f"kd-{pair}-accuracy.png")
        image(fig, [0.08, 0.02, 0.84, 0.33], figures_dir / f"kd-{pair}-curves.png")
        save(pdf, fig)
