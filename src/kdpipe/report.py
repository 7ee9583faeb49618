"""results/report.pdf from the tables and figures (matplotlib's PDF backend, text kept as text)."""

import datetime as dt
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
matplotlib.rcParams["pdf.fonttype"] = 42  # TrueType: the PDF's text can be searched and extracted
import matplotlib.image as mpimg  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.backends.backend_pdf import PdfPages  # noqa: E402

from kdpipe.references import REPDISTILLER_SOURCE, kd_reference  # noqa: E402

A4 = (8.27, 11.69)
ROWS_PER_PAGE = 38


def _fmt(mean: float, std: float) -> str:
    return f"{mean:.2f}" if pd.isna(std) else f"{mean:.2f} ± {std:.2f}"


def _page():
    return plt.figure(figsize=A4)


def _text(fig, y: float, text: str, size: float = 10, width: int = 95, **kw) -> float:
    """Write wrapped text at height y (figure fraction, from the top down); return the next free y."""
    lines = []
    for para in text.split("\n"):
        lines += textwrap.wrap(para, width) or [""]
    fig.text(0.08, y, "\n".join(lines), fontsize=size, va="top", **kw)
    return y - (len(lines) * size * 1.45) / (A4[1] * 72)


def _table(fig, rect, columns: list[str], rows: list[list[str]], size: float = 8):
    ax = fig.add_axes(rect)
    ax.axis("off")
    table = ax.table(cellText=rows, colLabels=columns, loc="upper center", cellLoc="center")
    table.auto_set_font_size(False)
    table.set_fontsize(size)
    table.scale(1, 1.3)
    return ax


def _image(fig, rect, path: Path):
    ax = fig.add_axes(rect)
    ax.imshow(mpimg.imread(path))
    ax.axis("off")


def title_page(pdf, name: str, runs: pd.DataFrame, jobs: pd.DataFrame) -> None:
    fig = _page()
    fig.text(0.5, 0.88, "kdpipe report", ha="center", fontsize=26, weight="bold")
    fig.text(0.5, 0.84, "Knowledge distillation, rebuilt from raw data", ha="center", fontsize=13)
    commits = ", ".join(sorted(runs["git_commit"].astype(str).unique()))
    devices = ", ".join(sorted(runs["device"].astype(str).unique()))
    hosts = ", ".join(sorted(runs["host"].astype(str).unique()))
    facts = [
        ("preset", name),
        ("date", dt.datetime.now().strftime("%Y-%m-%d %H:%M")),
        ("git commit", commits),
        ("devices", devices),
        ("hosts", hosts),
        ("jobs", f"{len(jobs)} ({len(runs)} trained models)"),
        ("total compute", f"{jobs['wall_s'].sum() / 60:.1f} job-minutes wall, {jobs['cpu_s'].sum() / 60:.1f} CPU-minutes"),
    ]
    y = 0.74
    for key, value in facts:
        fig.text(0.12, y, f"{key}:", fontsize=11, weight="bold", va="top")
        for line in textwrap.wrap(value, 60) or [""]:
            fig.text(0.32, y, line, fontsize=11, va="top")
            y -= 0.022
        y -= 0.008
    _text(fig, y - 0.03, (
        "Contents\n"
        "1. Knowledge distillation with soft and hard targets: per teacher→student pair, the teacher, "
        "the student trained alone, and the student distilled from soft targets (KL at temperature T) "
        "and from hard targets (the teacher's argmax), mean ± std over seeds.\n"
        "A. Appendix: every job's wall time, peak memory and where it ran."
    ), size=11, width=80)
    pdf.savefig(fig)
    plt.close(fig)


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
        spread = max(by.loc[method, "best_top1_std"], alone["best_top1_std"])
        if diff > 0:
            strength = "" if pd.isna(spread) or diff > spread else " (within one standard deviation across seeds)"
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
        fig = _page()
        fig.text(0.08, 0.95, f"1.{i} Knowledge distillation: {first['teacher']} → {first['student']}",
                 fontsize=15, weight="bold", va="top")
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
        y = _text(fig, 0.91, setup, size=9.5, width=100)
        columns = ["method", "model", "params", "seeds", "best top-1", "last top-1", "best top-5", "last top-5"]
        table_rows = [
            [r["label"], r["arch"], f"{int(r['params']):,}", str(int(r["seeds"])),
             _fmt(r["best_top1_mean"], r["best_top1_std"]), _fmt(r["last_top1_mean"], r["last_top1_std"]),
             _fmt(r["best_top5_mean"], r["best_top5_std"]), _fmt(r["last_top5_mean"], r["last_top5_std"])]
            for _, r in rows.iterrows()
        ]
        _table(fig, [0.05, y - 0.16, 0.9, 0.15], columns, table_rows)
        y -= 0.17
        y = _text(fig, y, "Result: " + kd_verdict(rows), size=10, width=95, weight="bold")
        ref = kd_reference(first["dataset_source"], first["teacher"], first["student"])
        if ref:
            y = _text(fig, y - 0.005, (
                f"Reference, not measured here — {REPDISTILLER_SOURCE}: teacher {ref['teacher']:.2f}, "
                f"student alone {ref['alone']:.2f}, KD {ref['kd_soft']:.2f}."), size=9, width=100, style="italic")
        _image(fig, [0.08, 0.36, 0.84, y - 0.38], figures_dir / f"kd-{pair}-accuracy.png")
        _image(fig, [0.08, 0.02, 0.84, 0.33], figures_dir / f"kd-{pair}-curves.png")
        pdf.savefig(fig)
        plt.close(fig)


def jobs_appendix(pdf, jobs: pd.DataFrame) -> None:
    columns = ["rule", "job", "wall s", "peak RSS MB", "CPU s", "device", "host"]
    rows = [[r["rule"], r["job"], f"{r['wall_s']:.1f}", f"{r['max_rss_mb']:.0f}", f"{r['cpu_s']:.1f}",
             str(r["device"]) if pd.notna(r["device"]) else "", str(r["host"]) if pd.notna(r["host"]) else ""]
            for _, r in jobs.iterrows()]
    for start in range(0, max(len(rows), 1), ROWS_PER_PAGE):
        fig = _page()
        fig.text(0.08, 0.95, "A. Appendix: jobs", fontsize=15, weight="bold", va="top")
        _text(fig, 0.92, "Wall time, peak resident memory and CPU time from Snakemake's benchmark files; "
                         "device and host from each training job's metrics.json.", size=9)
        chunk = rows[start:start + ROWS_PER_PAGE]
        _table(fig, [0.03, 0.05, 0.94, 0.84], columns, chunk, size=6.5)
        pdf.savefig(fig)
        plt.close(fig)


def build_report(*, out, name: str, tables_dir, figures_dir) -> None:
    tables_dir, figures_dir, out = Path(tables_dir), Path(figures_dir), Path(out)
    summary = pd.read_csv(tables_dir / "kd_summary.csv")
    runs = pd.read_csv(tables_dir / "kd_runs.csv")
    jobs = pd.read_csv(tables_dir / "jobs.csv")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    with PdfPages(tmp, metadata={"Title": f"kdpipe report: {name}", "Creator": "kdpipe"}) as pdf:
        title_page(pdf, name, runs, jobs)
        kd_section(pdf, summary, figures_dir)
        jobs_appendix(pdf, jobs)
    tmp.replace(out)
