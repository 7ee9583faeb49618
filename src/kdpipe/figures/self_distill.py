"""Self-distillation figures: accuracy against each exit's cost, and every exit's test curve."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from kdpipe.tables.self_distill import trained_exits  # noqa: E402

EXIT_COLOURS = {"exit1": "#9ecae1", "exit2": "#4292c6", "exit3": "#2171b5", "exit4": "#08306b", "ensemble": "#d62728"}


def cost_plot(summary: pd.DataFrame, path) -> None:
    """Best-epoch top-1 (mean ± std) against multiply-accumulates per image, per exit."""
    fig, ax = plt.subplots(figsize=(7, 4))
    sd = summary[(summary["method"] == "self_distill") & summary["trained"]]
    exits = sd[sd["exit"] != "ensemble"]
    ax.errorbar(exits["macs"] / 1e6, exits["best_top1_mean"], yerr=exits["best_top1_std"].fillna(0), marker="o",
                capsize=4, color="#08519c", label="self-distillation, exits 1-4")
    for _, r in sd.iterrows():
        ax.annotate(r["exit"].replace("exit", "exit "), (r["macs"] / 1e6, r["best_top1_mean"]),
                    textcoords="offset points", xytext=(5, -12), fontsize=8)
    ens = sd[sd["exit"] == "ensemble"]
    ax.errorbar(ens["macs"] / 1e6, ens["best_top1_mean"], yerr=ens["best_top1_std"].fillna(0), marker="*",
                markersize=12, capsize=4, color=EXIT_COLOURS["ensemble"], linestyle="none", label="self-distillation, ensemble")
    base = summary[(summary["method"] == "baseline") & summary["trained"]]
    ax.errorbar(base["macs"] / 1e6, base["best_top1_mean"], yerr=base["best_top1_std"].fillna(0), marker="s",
                capsize=4, color="#4d4d4d", linestyle="none", label="baseline (last exit only)")
    ax.set_xlabel("multiply-accumulates per image (millions)")
    ax.set_ylabel("best-epoch test top-1 (%)")
    ax.set_title(f"accuracy against cost, {sd['arch'].iloc[0]} (width {sd['width'].iloc[0]})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


def curves(runs: pd.DataFrame, histories: dict[str, pd.DataFrame], path) -> None:
    """Test top-1 per epoch for each exit (mean over seeds, shaded ± std); baseline dashed."""
    fig, ax = plt.subplots(figsize=(8, 4))
    for method, style in (("self_distill", "-"), ("baseline", "--")):
        names = [r for r in runs.loc[runs["method"] == method, "run"] if r in histories]
        if not names:
            continue
        for name in trained_exits(method):
            col = f"top1_{name}"
            data = pd.concat([histories[r].set_index("epoch")[col].rename(r) for r in names], axis=1)
            mean, std = data.mean(axis=1), data.std(axis=1, ddof=1).fillna(0)
            label = f"{'self-distillation' if method == 'self_distill' else 'baseline'} {name}"
            colour = EXIT_COLOURS[name] if method == "self_distill" else "#4d4d4d"
            ax.plot(mean.index, mean, style, color=colour, marker=".", label=label)
            ax.fill_between(mean.index, mean - std, mean + std, color=colour, alpha=0.15)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("test top-1 (%)")
    ax.set_title("test accuracy of every exit during training (mean ± std over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


def self_distill_figures(summary_csv, runs_csv, history_files, *, cost_png, curves_png) -> None:
    summary, runs = pd.read_csv(summary_csv), pd.read_csv(runs_csv)
    histories = {Path(p).parent.name: pd.read_csv(p) for p in history_files}
    cost_plot(summary, cost_png)
    curves(runs, histories, curves_png)
