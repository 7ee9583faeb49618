"""Self-distillation figures: accuracy against each exit's cost, and every exit's test curve."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from kdpipe.plan import METHOD_LABELS  # noqa: E402
from kdpipe.tables.self_distill import trained_exits  # noqa: E402
from kdpipe.figures import save_png  # noqa: E402

DEEP_COLOUR = "#969696"  # deep supervision, the control: grey, like the baseline
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
    deep = summary[(summary["method"] == "deep_supervision") & summary["trained"]]
    deep_exits = deep[deep["exit"] != "ensemble"]
    ax.errorbar(deep_exits["macs"] / 1e6, deep_exits["best_top1_mean"], yerr=deep_exits["best_top1_std"].fillna(0),
                marker="D", capsize=4, color=DEEP_COLOUR, linestyle=":", label="deep supervision, exits 1-4")
    deep_ens = deep[deep["exit"] == "ensemble"]
    ax.errorbar(deep_ens["macs"] / 1e6, deep_ens["best_top1_mean"], yerr=deep_ens["best_top1_std"].fillna(0),
                marker="*", markersize=10, capsize=4, color=DEEP_COLOUR, linestyle="none",
                label="deep supervision, ensemble")
    ax.set_xlabel("multiply-accumulates per image (millions)")
    ax.set_ylabel("best-epoch test top-1 (%)")
    ax.set_title(f"accuracy against cost, {sd['arch'].iloc[0]} (width {sd['width'].iloc[0]})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    save_png(fig, path, dpi=150)
    plt.close(fig)


def curves(runs: pd.DataFrame, histories: dict[str, pd.DataFrame], path) -> None:
    """Test top-1 per epoch for each exit (mean over seeds, shaded ± std): colour by exit, line by
    method (self-distillation solid, deep supervision dotted); the baseline grey and dashed."""
    fig, ax = plt.subplots(figsize=(8, 4))
    styles = {"self_distill": ("-", None), "baseline": ("--", "#4d4d4d"), "deep_supervision": (":", None)}
    for method, (style, grey) in styles.items():
        names = [r for r in runs.loc[runs["method"] == method, "run"] if r in histories]
        if not names:
            continue
        for name in trained_exits(method):
            col = f"top1_{name}"
            data = pd.concat([histories[r].set_index("epoch")[col].rename(r) for r in names], axis=1)
            mean, std = data.mean(axis=1), data.std(axis=1, ddof=1).fillna(0)
            label = f"{METHOD_LABELS[method].split(' (')[0]} {name}"
            colour = grey or EXIT_COLOURS[name]
            ax.plot(mean.index, mean, style, color=colour, marker=".", label=label)
            ax.fill_between(mean.index, mean - std, mean + std, color=colour, alpha=0.15)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("test top-1 (%)")
    ax.set_title("test accuracy of every exit during training (mean ± std over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="lower right")
    fig.tight_layout()
    save_png(fig, path, dpi=150)
    plt.close(fig)


def self_distill_figures(summary_csv, runs_csv, history_files, *, cost_png, curves_png) -> None:
    summary, runs = pd.read_csv(summary_csv), pd.read_csv(runs_csv)
    histories = {Path(p).parent.name: pd.read_csv(p) for p in history_files}
    cost_plot(summary, cost_png)
    curves(runs, histories, curves_png)
