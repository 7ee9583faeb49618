"""Report section per sweep (``classify.sweeps``): the line chart, and one sentence per line saying which
value did best and whether the seeds can tell the values apart."""

import re
from pathlib import Path

import matplotlib.image as mpimg
import pandas as pd

from kdpipe.errors import InputError
from kdpipe.report.layout import A4, fmt, heading, image, page, save, text
from kdpipe.tables.sweep import TRANSFER_SET, pair_rows, read_sweep_table, sweep_pairs, value_text

# A sweep's name is part of its files' names (sweep_<name>.csv, sweep_<name>.png): a plain word.
SWEEP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


def _seeds(n) -> str:
    return f"{int(n)} seed" + ("" if int(n) == 1 else "s")


def _subject(row: pd.Series) -> str:
    pair = f"{row['teacher']} → {row['student']}" if row["teacher"] else row["student"]
    return f"{row['label']}, {pair}"


def sweep_sentence(rows: pd.DataFrame) -> str:
    """One method's points on one pair: the value with the best mean best-epoch top-1, and whether its
    lead over the worst value's mean exceeds the seed spread (the sum of the two values' stds)."""
    rows = rows.sort_values("value")
    best = rows.loc[rows["best_top1_mean"].idxmax()]
    worst = rows.loc[rows["best_top1_mean"].idxmin()]
    setting = best["setting"]
    at_best = (f"{_subject(best)}: best at {setting} = {value_text(best['value'])} with "
               f"{fmt(best['best_top1_mean'], best['best_top1_std'])}% over {_seeds(best['seeds'])}")
    if len(rows) < 2:
        return f"{at_best}; the only value swept, nothing to compare it with."
    diff = best["best_top1_mean"] - worst["best_top1_mean"]
    if diff == 0:  # a tie (chance accuracy, say): no value is best
        return (f"{_subject(best)}: every value of {setting} gives {best['best_top1_mean']:.2f}% (mean over "
                f"{_seeds(best['seeds'])}): the values are not told apart.")
    against = (f"{diff:.2f} points above the worst value ({setting} = {value_text(worst['value'])}, "
               f"{fmt(worst['best_top1_mean'], worst['best_top1_std'])}%)")
    spread = best["best_top1_std"] + worst["best_top1_std"]
    if pd.isna(spread):
        verdict = "with one seed there is no seed spread to compare the difference with"
    elif diff > spread:
        verdict = f"which exceeds the seed spread ({spread:.2f}, the sum of their stds)"
    else:
        verdict = (f"which is within the seed spread ({spread:.2f}, the sum of their stds): these seeds do not "
                   "tell the values apart")
    return f"{at_best}; {against}, {verdict}."


def reference_sentence(row: pd.Series) -> str:
    """The curve's reference: a method that does not read the swept setting, at its mean ± std."""
    return (f"Reference: {row['label']} ({row['student']}), which does not read {row['setting']}: "
            f"{fmt(row['best_top1_mean'], row['best_top1_std'])}% over {_seeds(row['seeds'])}.")


def sweep_sentences(table: pd.DataFrame) -> list[str]:
    """Per pair, its reference then one sentence per method line; a line without a teacher (the student
    alone), drawn beside every pair with its student, is said once."""
    said, out = set(), []
    for teacher, student in sweep_pairs(table):
        rows = pair_rows(table, teacher, student)
        for role in ("reference", "point"):
            for key, line in rows[rows["role"] == role].groupby(["teacher", "student", "method"], sort=False):
                if (role, *key) in said:
                    continue
                said.add((role, *key))
                out.append(reference_sentence(line.iloc[0]) if role == "reference" else sweep_sentence(line))
    return out


def sweep_section(pdf, table: pd.DataFrame, chart: Path) -> None:
    first = table.iloc[0]
    name, setting = first["sweep"], first["setting"]
    fig = page()
    heading(fig, f"Sweep: {name} ({setting})")
    what = ("the transfer-set size (images each student trains on)" if setting == TRANSFER_SET
            else f"{setting}, every other setting as configured")
    intro = (f"Each point is an ordinary classifier run at one value of {what}: best-epoch test top-1 in %, mean ± "
             "std over seeds, a line per method in the registry's colours with a ± std band.")
    if (table["role"] == "reference").any():
        intro += " Dashed with its ± std band: the student alone, which does not read the setting (the reference)."
    intro += (" A value is told apart from another only where the difference of their means exceeds the sum of "
              "their stds across seeds.")
    y = text(fig, 0.91, intro, size=8, width=120)
    y = text(fig, y - 0.005, "Result (best epoch):\n" + "\n".join(sweep_sentences(table)), size=8, width=100,
             weight="bold")
    pixels = mpimg.imread(chart).shape
    height = 0.9 * pixels[0] / pixels[1] * A4[0] / A4[1]  # the chart at the page's width, its own aspect
    if y - 0.02 - height < 0.03:  # too many lines for the chart below them: it gets a page of its own
        save(pdf, fig)
        fig = page()
        heading(fig, f"Sweep: {name} ({setting}), chart")
        y = 0.91
    height = min(height, y - 0.05)
    image(fig, [0.05, y - 0.02 - height, 0.9, height], chart)
    save(pdf, fig)


def load_sweeps(names, tables_dir: Path, figures_dir: Path) -> list[tuple[pd.DataFrame, Path]]:
    """Each named sweep's table (``sweep_<name>.csv``) and chart (``sweep_<name>.png``), checked before
    the report is started."""
    out = []
    for name in names:
        if not SWEEP_NAME.fullmatch(name):
            raise InputError(f"sweep name {name!r}: use letters, digits, '_' and '-' (it names the sweep's files)")
        path = Path(tables_dir) / f"sweep_{name}.csv"
        table = read_sweep_table(path)
        if table.empty:
            raise InputError(f"{path} holds no runs: delete it and run Snakemake again")
        chart = Path(figures_dir) / f"sweep_{name}.png"
        if not chart.is_file():
            raise InputError(f"{chart} does not exist: make it with `kdpipe figures-sweep` (Snakemake does, for every "
                             "sweep in classify.sweeps)")
        out.append((table, chart))
    return out
