"""A sweep's line chart: best-epoch top-1 (mean ± std over seeds) against the swept value, per pair."""

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import FixedLocator, NullLocator  # noqa: E402

from kdpipe import methods  # noqa: E402
from kdpipe.errors import InputError  # noqa: E402
from kdpipe.figures import save_png  # noqa: E402
from kdpipe.tables.sweep import TRANSFER_SET, pair_rows, read_sweep_table, sweep_pairs, value_text  # noqa: E402


def x_label(setting: str) -> str:
    return "transfer-set size (images)" if setting == TRANSFER_SET else setting


def _plot_pair(ax, rows: pd.DataFrame, setting: str) -> None:
    for _, ref in rows[rows["role"] == "reference"].iterrows():
        colour = methods.colour(ref["method"])
        mean, std = ref["best_top1_mean"], ref["best_top1_std"]
        if not pd.isna(std):
            ax.axhspan(mean - std, mean + std, color=colour, alpha=0.12, lw=0)
        ax.axhline(mean, color=colour, ls="--", lw=1, label=f"{ref['label']} (reference)")
    points = rows[rows["role"] == "point"]
    for method, line in points.groupby("method", sort=False):
        line = line.sort_values("value")
        colour = methods.colour(method)
        std = line["best_top1_std"].fillna(0)  # one seed: no band
        ax.plot(line["value"], line["best_top1_mean"], color=colour, marker="o", ms=4, label=line["label"].iloc[0])
        ax.fill_between(line["value"], line["best_top1_mean"] - std, line["best_top1_mean"] + std,
                        color=colour, alpha=0.18, lw=0)
    if setting == TRANSFER_SET:
        ax.set_xscale("log")  # sizes grow by factors: equal steps on the page
    values = sorted(points["value"].dropna().unique())
    ax.xaxis.set_major_locator(FixedLocator(values))
    ax.xaxis.set_minor_locator(NullLocator())  # only the swept values, not the log axis's decades
    ax.set_xticklabels([value_text(v) for v in values])
    ax.set_xlabel(x_label(setting))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")


def sweep_figure(table: pd.DataFrame, out) -> plt.Figure:
    """One subplot per teacher → student pair, a line per method in its registry colour (± std band),
    the student alone as a dashed reference band; written to ``out``, and returned (closed) for tests."""
    pairs = sweep_pairs(table)
    cols = min(3, max(1, len(pairs)))
    nrows = max(1, math.ceil(len(pairs) / cols))
    fig, axes = plt.subplots(nrows, cols, figsize=(4.6 * cols, 3.6 * nrows), squeeze=False, sharey=True)
    setting = table["setting"].iloc[0]
    for ax, (teacher, student) in zip(axes.flat, pairs):
        _plot_pair(ax, pair_rows(table, teacher, student), setting)
        ax.set_title(f"{teacher} → {student}" if teacher else student, fontsize=10)
    for ax in list(axes.flat)[len(pairs):]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel("best-epoch test top-1 (%)\nmean ± std over seeds")
    fig.suptitle(table["sweep"].iloc[0], fontsize=11)
    fig.tight_layout()
    save_png(fig, out, dpi=150)
    plt.close(fig)
    return fig


def sweep_figures(table_csv, out) -> None:
    table = read_sweep_table(table_csv)
    if table.empty:
        raise InputError(f"{table_csv} holds no runs: a sweep's table needs its points' metrics.json files")
    sweep_figure(table, out)
