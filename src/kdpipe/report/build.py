"""Assemble results/report.pdf: title page, one section per experiment family, the jobs appendix.

The report reads only the tables and figures the pipeline made before it.
"""

import datetime as dt
import textwrap
from pathlib import Path

import pandas as pd
from matplotlib.backends.backend_pdf import PdfPages

from kdpipe import methods
from kdpipe.io import atomic_file
from kdpipe.report.autoencoder import autoencoder_section
from kdpipe.report.jobs import jobs_appendix
from kdpipe.report.kd import kd_section
from kdpipe.report.layout import page, save, text
from kdpipe.report.reproduction import reproduction_section
from kdpipe.report.self_distill import self_distill_section
from kdpipe.report.sweep import load_sweeps, sweep_section
from kdpipe.tables.cost import cost_sentence

CONTENTS = (
    "Contents\n"
    "1. Knowledge distillation: {methods} × every teacher→student pair, read against the student trained "
    "alone, with the published numbers beside ours as references.\n"
    "2. Self-distillation (Be Your Own Teacher): a multi-exit network whose deepest exit teaches its shallower "
    "exits, against the same network trained on its last exit only.\n"
    "3. Two Cityscapes autoencoders (photo→label map, label map→photo) teaching each other through matched "
    "encoder and decoder maps: the baseline and every variant, with metrics and the seed's picture grids.\n"
    "4. Reproduction: ours against every published number (teachers, methods per pair, BYOT's exits) with a 95% "
    "t-interval over seeds and the epoch each source states, one quotable sentence each.\n"
    "A. Appendix: every job's wall time, peak memory and where it ran.\n"
    "All figures are mean ± std over seeds unless a table says n = 1."
)


def contents(methods_shown, sweeps=()) -> str:
    """The title page's contents: the methods section 1 shows (names, in registry order: the
    preset's, which may be fewer than the registry holds); sweeps, when any, follow section 1 as the
    report does."""
    methods_shown = set(methods_shown)
    shown = [m.label for name, m in methods.METHODS.items() if name in methods_shown]
    listed = ("every registered method" if len(shown) == len(methods.METHODS) else
              f"{len(shown)} of the {len(methods.METHODS)} registered methods")
    text = CONTENTS.format(methods=f"{listed} ({', '.join(shown)})")
    if not sweeps:
        return text
    first, rest = text.split("\n2. ", 1)
    line = ("1s. Sweeps (" + ", ".join(sweeps) + "): accuracy against one setting's values, each read against "
            "its seeds' spread.")
    return f"{first}\n{line}\n2. {rest}"


def title_page(pdf, name: str, runs: pd.DataFrame, jobs: pd.DataFrame, methods_shown, sweeps=()) -> None:
    fig = page()
    fig.text(0.5, 0.88, "kdpipe report", ha="center", fontsize=26, weight="bold")
    fig.text(0.5, 0.84, "Knowledge distillation, rebuilt from raw data", ha="center", fontsize=13)

    def listed(column):
        return ", ".join(sorted(runs[column].dropna().astype(str).unique()))

    facts = [
        ("preset", name),
        ("date", dt.datetime.now().strftime("%Y-%m-%d %H:%M")),
        ("git commit", listed("git_commit")),
        ("devices", listed("device")),
        ("hosts", listed("host")),
        ("jobs", f"{len(jobs)} ({len(runs)} trained models)"),
        ("total compute", f"{jobs['wall_s'].sum() / 60:.1f} job-minutes wall, {jobs['cpu_s'].sum() / 60:.1f} CPU-minutes"),
        ("cost", cost_sentence(jobs)),  # device-hours from each run's metrics.json (kdpipe.tables.cost)
    ]
    y = 0.74
    for key, value in facts:
        fig.text(0.12, y, f"{key}:", fontsize=11, weight="bold", va="top")
        for line in textwrap.wrap(value, 60) or [""]:
            fig.text(0.32, y, line, fontsize=11, va="top")
            y -= 0.022
        y -= 0.008
    text(fig, y - 0.03, contents(methods_shown, sweeps), size=11, width=80)
    save(pdf, fig)


def build_report(*, out, name: str, tables_dir, figures_dir, sweeps: list[str] = ()) -> None:
    """``sweeps``: the names of classify.sweeps to show, each from ``sweep_<name>.csv`` and ``.png``."""
    tables_dir, figures_dir, out = Path(tables_dir), Path(figures_dir), Path(out)
    kd_summary = pd.read_csv(tables_dir / "kd_summary.csv")
    sd_summary = pd.read_csv(tables_dir / "self_distill_summary.csv")
    ae_summary = pd.read_csv(tables_dir / "autoencoder_summary.csv")
    runs = pd.concat([pd.read_csv(tables_dir / f) for f in ("kd_runs.csv", "self_distill_runs.csv", "autoencoder_runs.csv")])
    jobs = pd.read_csv(tables_dir / "jobs.csv")
    reproduction = pd.read_csv(tables_dir / "reproduction.csv")
    sweep_inputs = load_sweeps(sweeps, tables_dir, figures_dir)
    # A temp file of this process's own (two builds never share one), written through the handle
    # kdpipe created (never reopened by name: a link planted there is not followed), renamed over the
    # report at the end.
    with atomic_file(out, "wb") as fh, PdfPages(fh, metadata={"Title": f"kdpipe report: {name}", "Creator": "kdpipe"}) as pdf:
        title_page(pdf, name, runs, jobs, kd_summary["method"].unique(), sweeps)
        kd_section(pdf, kd_summary, figures_dir)
        for table, chart in sweep_inputs:
            sweep_section(pdf, table, chart)
        self_distill_section(pdf, sd_summary, figures_dir)
        autoencoder_section(pdf, ae_summary, figures_dir)
        reproduction_section(pdf, reproduction, [kd_summary, sd_summary])
        jobs_appendix(pdf, jobs)
