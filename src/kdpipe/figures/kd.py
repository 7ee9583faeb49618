"""Figures (matplotlib, PNG): what the tables say, as pictures."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from kdpipe import methods  # noqa: E402
from kdpipe.tables.kd import entry_label, pair_members  # noqa: E402
from kdpipe.figures import save_png  # noqa: E402


def kd_accuracy_bars(summary: pd.DataFrame, path) -> None:
    """All methods of one pair: best- and last-epoch top-1, mean over seeds with ± std error bars,
    each method in its registry colour; the student alone's best-epoch mean as a dashed line."""
    methods_ = list(summary["method"])
    fig, ax = plt.subplots(figsize=(max(7, 0.9 * len(methods_) + 2), 4))
    width = 0.38
    for k, (when, hatch) in enumerate((("best", ""), ("last", "//"))):
        xs = [i + (k - 0.5) * width for i in range(len(methods_))]
        means = summary[f"{when}_top1_mean"]
        stds = summary[f"{when}_top1_std"].fillna(0)
        bars = ax.bar(xs, means, width, yerr=stds, capsize=3, hatch=hatch, label=f"{when} epoch",
                      color=[methods.colour(m) for m in methods_], edgecolor="white", alpha=0.9 if k == 0 else 0.6)
        ax.bar_label(bars, labels=[f"{v:.1f}" for v in means], padding=2, fontsize=7)
    alone = summary[summary["method"] == methods.BASELINE]
    if not alone.empty:
        ax.axhline(alone["best_top1_mean"].iloc[0], color=methods.colour(methods.BASELINE), lw=0.8, ls="--",
                   label=f"{methods.label(methods.BASELINE)} (best)")
    labels = [f"{label}\n{a}" for label, a in zip(summary["label"], summary["arch"])]
    ax.set_xticks(range(len(methods_)), labels, fontsize=7, rotation=30, ha="right")
    ax.set_ylabel("test top-1 accuracy (%)")
    low = (summary[["best_top1_mean", "last_top1_mean"]].min().min() - 10)
    ax.set_ylim(max(0, low), 100 if low > 50 else None)
    n = int(summary["seeds"].min())
    ax.set_title(f"{summary['pair'].iloc[0]} on {summary['dataset'].iloc[0]}: mean ± std over {n} seed(s)", fontsize=10)
    ax.legend(loc="lower right", fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    save_png(fig, path, dpi=150)
    plt.close(fig)


def kd_curves(members: dict[str, pd.DataFrame], histories: dict[str, pd.DataFrame], path) -> None:
    """Test top-1 per epoch, mean over seeds shaded ± std: the teacher (left) and its students (right)."""
    fig, (ax_t, ax_s) = plt.subplots(1, 2, figsize=(9, 3.8), gridspec_kw={"width_ratios": [1, 2]}, sharey=True)
    for entry, group in members.items():
        runs = [r for r in group["run"] if r in histories]
        if not runs:
            continue
        method, member = group["method"].iloc[0], int(group["member"].iloc[0])
        column = f"top1{methods.score_suffix(member)}"
        curves = pd.concat([histories[r].set_index("epoch")[column].rename(r) for r in runs], axis=1)
        mean, std = curves.mean(axis=1), curves.std(axis=1, ddof=1).fillna(0)
        ax = ax_t if method == "teacher" else ax_s
        colour = methods.colour(method)
        ax.plot(mean.index, mean, color=colour, marker="." if member == 1 else "x", ls="-" if member == 1 else ":",
                label=f"{entry_label(method, member)} ({group['arch'].iloc[0]})")
        ax.fill_between(mean.index, mean - std, mean + std, color=colour, alpha=0.15)
    ax_t.set_title("teacher", fontsize=10)
    ax_s.set_title("students", fontsize=10)
    ax_t.set_ylabel("test top-1 accuracy (%)")
    for ax in (ax_t, ax_s):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, loc="lower right")
    fig.suptitle("test accuracy during training (mean ± std over seeds)", fontsize=11)
    fig.tight_layout()
    save_png(fig, path, dpi=150)
    plt.close(fig)


def kd_figures(summary_csv, runs_csv, history_files, *, out_dir) -> None:
    summary, runs = pd.read_csv(summary_csv), pd.read_csv(runs_csv)
    histories = {Path(p).parent.name: pd.read_csv(p) for p in history_files}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for pair, rows in summary.groupby("pair", sort=False):
        kd_accuracy_bars(rows, out_dir / f"kd-{pair}-accuracy.png")
        first = rows.iloc[0]
        members = pair_members(runs, first["dataset"], first["teacher"], first["student"])
        kd_curves(members, histories, out_dir / f"kd-{pair}-curves.png")
