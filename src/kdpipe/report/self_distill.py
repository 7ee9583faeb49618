"""Report section 2: self-distillation (Be Your Own Teacher) against the same network trained plainly."""

from pathlib import Path

import pandas as pd

from kdpipe.references import BYOT_CIFAR100_RESNET18, BYOT_SOURCE
from kdpipe.report.layout import fmt, heading, image, page, save, table, text, within_spread
from kdpipe.tables.self_distill import EXITS


def _cell(row: pd.Series | None, when: str) -> str:
    if row is None:
        return "–"
    if not row["trained"]:
        return "not trained"
    return fmt(row[f"{when}_top1_mean"], row[f"{when}_top1_std"])


def verdict(sd: pd.DataFrame, base: pd.DataFrame) -> str:
    if "exit4" not in sd.index or "exit4" not in base.index:
        return ""
    diff = sd.loc["exit4", "best_top1_mean"] - base.loc["exit4", "best_top1_mean"]
    parts = []
    if diff > 0:
        weak = within_spread(diff, sd.loc["exit4", "best_top1_std"], base.loc["exit4", "best_top1_std"])
        parts.append(f"Self-distillation raised the deepest exit's best-epoch top-1 by {diff:+.2f} points over the baseline{weak}.")
    else:
        parts.append(f"Self-distillation did NOT beat the baseline at the deepest exit ({diff:+.2f} points of best-epoch top-1).")
    ens = sd.loc["ensemble", "best_top1_mean"] - sd.loc["exit4", "best_top1_mean"]
    parts.append(f"The ensemble of its four exits is {ens:+.2f} points from its deepest exit alone.")
    return " ".join(parts)


def self_distill_section(pdf, summary: pd.DataFrame, figures_dir: Path) -> None:
    sd = summary[summary["method"] == "self_distill"].set_index("exit")
    base = summary[summary["method"] == "baseline"].set_index("exit")
    first = summary.iloc[0]
    fig = page()
    heading(fig, "2 Self-distillation (Be Your Own Teacher)")
    setup = (
        f"Data: {first['dataset']} ({first['dataset_source']}), {int(first['train_images']):,} training images. "
        f"Model: multi-exit {first['arch']} of width {int(first['width'])}, {int(first['epochs'])} epochs; an exit after "
        f"each of the four stages (a bottleneck brings stages 1-3 to stage 4's shape, then pooling and a linear "
        f"classifier). Self-distillation minimises Σ_i (1-a)·CE(q_i, y) + Σ_(i<4) [a·T²·KL(q_4 ‖ q_i) + λ·‖F_i − F_4‖²] "
        f"with T = {sd['temperature'].iloc[0]}, a = {sd['alpha'].iloc[0]}, λ = {sd['lam'].iloc[0]} "
        f"(‖·‖² is the mean squared difference; deepest exit detached as teacher: {sd['detach_teacher'].iloc[0]}). "
        f"The baseline is the same network trained with cross-entropy on its last exit only, so its other exits "
        f"are untrained. 'Best' is the epoch at which the deepest exit peaked; 'last' the final epoch. "
        f"Test top-1 in %, mean ± std over {int(first['seeds'])} seed(s)."
    )
    y = text(fig, 0.91, setup, size=9.5, width=100)
    labels = {"exit1": "1/4", "exit2": "2/4", "exit3": "3/4", "exit4": "4/4", "ensemble": "ensemble"}
    rows = []
    for name in EXITS:
        s = sd.loc[name] if name in sd.index else None
        b = base.loc[name] if name in base.index else None
        rows.append([labels[name], f"{int(s['params']):,}" if s is not None else "–",
                     f"{s['macs'] / 1e6:.1f}" if s is not None else "–",
                     _cell(s, "best"), _cell(s, "last"), _cell(b, "best"), _cell(b, "last")])
    columns = ["exit", "params", "MMACs", "self-distill best", "self-distill last", "baseline best", "baseline last"]
    table(fig, [0.04, y - 0.13, 0.92, 0.12], columns, rows, size=7.5)
    y -= 0.135
    y = text(fig, y, "Result: " + verdict(sd, base), size=10, width=95, weight="bold")
    ref = " / ".join(f"{BYOT_CIFAR100_RESNET18[f'exit{i}']:.2f}" for i in range(1, 5))
    y = text(fig, y - 0.005, f"Reference, not measured here — {BYOT_SOURCE}, exits 1/4 … 4/4: {ref}. A different "
                            f"data set and scale unless this run is CIFAR-100 with the paper's recipe.",
             size=8.5, width=110, style="italic")
    image(fig, [0.08, 0.36, 0.84, y - 0.37], figures_dir / "self_distill-cost.png")
    image(fig, [0.05, 0.02, 0.9, 0.33], figures_dir / "self_distill-curves.png")
    save(pdf, fig)
