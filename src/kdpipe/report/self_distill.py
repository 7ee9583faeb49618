"""Report section 2: self-distillation (Be Your Own Teacher) against the same network trained plainly
and against deep supervision (cross-entropy at every exit and nothing else), paired by seed."""

from pathlib import Path

import pandas as pd

from kdpipe.plan import METHOD_LABELS
from kdpipe.references import BYOT_CIFAR100_RESNET18, BYOT_SOURCE
from kdpipe.report.kd import diff_cell
from kdpipe.report.layout import fmt, heading, image, page, save, table, text, within_spread
from kdpipe.tables.self_distill import COMPARED, EXITS

EXIT_LABELS = {"exit1": "1/4", "exit2": "2/4", "exit3": "3/4", "exit4": "4/4", "ensemble": "ensemble"}


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
    paired = sd.loc["exit4"].get("vs_baseline_best_top1_diff_mean")
    paired = (f"; paired by seed {diff_cell(sd.loc['exit4'], 'best', 'vs_baseline_')}"
              if paired is not None and not pd.isna(paired) else "")
    parts = []
    if diff > 0:
        weak = within_spread(diff, sd.loc["exit4", "best_top1_std"], base.loc["exit4", "best_top1_std"])
        parts.append(f"Self-distillation raised the deepest exit's best-epoch top-1 by {diff:+.2f} points over the "
                     f"baseline{weak}{paired}.")
    else:
        parts.append(f"Self-distillation did NOT beat the baseline at the deepest exit ({diff:+.2f} points of "
                     f"best-epoch top-1{paired}).")
    ens = sd.loc["ensemble", "best_top1_mean"] - sd.loc["exit4", "best_top1_mean"]
    parts.append(f"The ensemble of its four exits is {ens:+.2f} points from its deepest exit alone.")
    return " ".join(parts)


def paired_verdict(sd: pd.DataFrame, reference: str) -> str:
    """Self-distillation − ``reference`` at every exit both trained, paired by seed (best epoch): one
    sentence, and whether BYOT's extra terms beat it where the difference exceeds its spread."""
    key = f"vs_{reference}_best_top1"
    if f"{key}_diff_mean" not in sd.columns:
        return ""
    rows = sd[sd[f"{key}_diff_mean"].notna()]
    if rows.empty:
        return ""
    cells = [f"{EXIT_LABELS[name]} {diff_cell(r, 'best', f'vs_{reference}_')}" for name, r in rows.iterrows()]
    clear = [EXIT_LABELS[n] for n, r in rows.iterrows() if r[f"{key}_verdict"] == "larger than spread"
             and r[f"{key}_diff_mean"] > 0]
    n = int(rows[f"{key}_paired_seeds"].max())
    out = f"Against {METHOD_LABELS[reference]}, paired over {n} seed(s): " + "; ".join(cells) + ". "
    if n < 2:
        return out + "One seed: no spread to tell a difference from noise."
    return out + (f"Larger than its spread (and positive) at {', '.join(clear)}." if clear
                  else "Positive and larger than its spread at no exit.")


def self_distill_section(pdf, summary: pd.DataFrame, figures_dir: Path) -> None:
    sd = summary[summary["method"] == COMPARED].set_index("exit")
    base = summary[summary["method"] == "baseline"].set_index("exit")
    deep = summary[summary["method"] == "deep_supervision"].set_index("exit")
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
        f"are untrained. Deep supervision, the control, trains it with Σ_i CE(q_i, y) (the loss above at a = 0, "
        f"λ = 0: a label loss at every exit, no KL, no feature term), same recipe: what self-distillation adds beyond "
        f"it is what its teacher terms do. 'Best' is the epoch at which the deepest exit peaked; 'last' the final "
        f"epoch. Test top-1 in %, mean ± std over {int(first['seeds'])} seed(s); Δ: self-distillation minus "
        f"deep supervision, paired by seed (seeds better / seeds)."
    )
    y = text(fig, 0.91, setup, size=9, width=105)
    rows = []
    for name in EXITS:
        s = sd.loc[name] if name in sd.index else None
        b = base.loc[name] if name in base.index else None
        d = deep.loc[name] if name in deep.index else None
        rows.append([EXIT_LABELS[name], f"{int(s['params']):,}" if s is not None else "–",
                     f"{s['macs'] / 1e6:.1f}" if s is not None else "–",
                     _cell(s, "best"), _cell(s, "last"), _cell(b, "best"), _cell(b, "last"), _cell(d, "best"),
                     _cell(d, "last"), diff_cell(s, "best", "vs_deep_supervision_") if s is not None else "–"])
    columns = ["exit", "params", "MMACs", "self-distill\nbest", "self-distill\nlast", "baseline\nbest",
               "baseline\nlast", "deep sup.\nbest", "deep sup.\nlast", "Δ vs deep sup.\nbest"]
    cells = table(fig, [0.02, y - 0.15, 0.96, 0.14], columns, rows, size=6.5).tables[0]
    cells.auto_set_column_width(list(range(len(columns))))  # ten columns: each as wide as its text
    y -= 0.155
    result = [verdict(sd, base), paired_verdict(sd, "deep_supervision")]
    y = text(fig, y, "Result: " + " ".join(r for r in result if r), size=9, width=105, weight="bold")
    ref = " / ".join(f"{BYOT_CIFAR100_RESNET18[f'exit{i}']:.2f}" for i in range(1, 5))
    y = text(fig, y - 0.005, f"Reference, not measured here — {BYOT_SOURCE}, exits 1/4 … 4/4: {ref}. A different "
                            f"data set and scale unless this run is CIFAR-100 with the paper's recipe.",
             size=8.5, width=110, style="italic")
    image(fig, [0.08, 0.31, 0.84, y - 0.32], figures_dir / "self_distill-cost.png")
    image(fig, [0.05, 0.01, 0.9, 0.29], figures_dir / "self_distill-curves.png")
    save(pdf, fig)
