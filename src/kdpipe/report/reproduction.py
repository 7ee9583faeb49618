"""Report section 4: reproduction, ours against every published number (results/tables/reproduction.csv).

One sentence per published number a reader can quote, then the table. Which numbers exist and
their sources come from the table (kdpipe.tables.reproduction, from the registries); nothing here
names a method.
"""

import pandas as pd

from kdpipe.references import NOT_STATED
from kdpipe.report.layout import ROWS_PER_PAGE, heading, page, save, text

SENTENCES_PER_PAGE = 16
# Relative widths of the table's columns: the first names what was published, and is long.
COLUMN_WIDTHS = [0.25, 0.04, 0.1, 0.1, 0.16, 0.12, 0.13, 0.06]

INTRO = (
    "Every published number a run of this build can be compared with: ours as mean ± sd over n seeds, with a "
    "95% t-interval for our mean (mean ± t·sd/√n, t the two-sided 5% value for n − 1 degrees of freedom), at "
    "the epoch the source states it reports, or at our best epoch where the source does not say (our last "
    "epoch is in the table). 'Inside' says the published number lies in our interval: with 2-3 seeds the "
    "interval is wide, so inside means 'not shown to differ', not 'reproduced'; outside means our mean differs "
    "from it by more than this many seeds' noise explains, which can come from a different recipe, teacher or "
    "epoch convention as much as from the method. Published numbers are references, not measured here. An "
    "imported teacher is the same checkpoint whatever the seed: its n counts distinct checkpoints, and one has no interval."
)


def _num(value) -> bool:
    return value is not None and not pd.isna(value)


def short_source(source: str) -> str:
    """A source's name without its parenthesised details: "RepDistiller README (CIFAR-100, …)" → "RepDistiller README"."""
    return source.split(" (")[0].strip()


def epoch_words(convention: str) -> str:
    return "epoch not stated" if convention == NOT_STATED else convention


def ours(row: pd.Series, when: str) -> str:
    """Our figure at ``when``: mean ± sd (epoch, n; 95% CI low–high), or without spread for one seed."""
    n, mean, sd = int(row["seeds"]), row[f"{when}_mean"], row[f"{when}_sd"]
    if n < 2 or not _num(sd):
        return f"{mean:.2f} ({when} epoch, n={n}; no interval from one seed)"
    return (f"{mean:.2f} ± {sd:.2f} ({when} epoch, n={n}; 95% CI "
            f"{row[f'{when}_ci_low']:.2f}–{row[f'{when}_ci_high']:.2f})")


def _inside(value) -> bool | None:
    if isinstance(value, str):
        return {"true": True, "false": False}.get(value.strip().lower())
    return None if not _num(value) else bool(value)


def _imported(row: pd.Series) -> bool:
    return row.get("imported") in (True, "True", "true")


def one_checkpoint(row: pd.Series) -> str:
    """An imported teacher read from one checkpoint (whatever the seeds): a measurement, not a
    sample, e.g. "resnet56 teacher: imported checkpoint (mdistiller), measured here at 72.34 top-1,
    RepDistiller README 72.34 (epoch not stated): 0.00 points apart; one checkpoint, no interval." """
    when = row["compared_at"]
    name = f"{row['student']} teacher" if row.get("method") == "teacher" else row["subject"]
    source = row.get("imported_from")
    source = f" ({source})" if isinstance(source, str) and source else ""
    diff = row[f"{when}_diff"]
    gap = ("0.00 points apart" if round(diff, 2) == 0
           else f"ours {abs(diff):.2f} points {'lower' if diff < 0 else 'higher'}")
    return (f"{name}: imported checkpoint{source}, measured here at {row[f'{when}_mean']:.2f} top-1, "
            f"{short_source(row['published_source'])} {row['published_top1']:.2f} "
            f"({epoch_words(row['published_epoch'])}): {gap}; one checkpoint, no interval.")


def sentence(row: pd.Series) -> str:
    """One quotable sentence for one published number, e.g. "resnet56 → resnet20, KD soft: ours 70.10 ±
    0.30 (best epoch, n=3; 95% CI 69.35–70.85), RepDistiller README 70.66 (epoch not stated): published
    number outside our interval; ours 0.56 points lower." """
    if _imported(row) and int(row["seeds"]) == 1:
        return one_checkpoint(row)
    when = row["compared_at"]
    subject = row["subject"] + (" (imported)" if _imported(row) else "")
    inside = _inside(row[f"{when}_inside"])
    if inside is None:
        verdict = "one seed, so no interval to place the published number in"
    else:
        verdict = f"published number {'inside' if inside else 'outside'} our interval"
    diff = row[f"{when}_diff"]
    gap = "ours equal to it" if round(diff, 2) == 0 else f"ours {abs(diff):.2f} points {'lower' if diff < 0 else 'higher'}"
    out = (f"{subject}: ours {ours(row, when)}, {short_source(row['published_source'])} {row['published_top1']:.2f} "
           f"({epoch_words(row['published_epoch'])}): {verdict}; {gap}")
    if row["published_epoch"] == NOT_STATED:
        other = "last" if when == "best" else "best"
        sd = row[f"{other}_sd"]
        spread = f" ± {sd:.2f}" if _num(sd) else ""
        out += f" (our {other} epoch: {row[f'{other}_mean']:.2f}{spread})"
    return out + "."


def no_published_numbers(datasets: list[str]) -> str:
    """The section's one line when nothing in this build has a published number (the demo's synthetic sets)."""
    on = ", ".join(datasets) if datasets else "this build's data sets"
    return (f"No published numbers to compare with: every published number kdpipe knows is on CIFAR-100, and this "
            f"build trained on {on}.")


def _cell(value, fmt="{:.2f}") -> str:
    return fmt.format(value) if _num(value) else "–"


def table_rows(t: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    columns = ["published number", "n", "ours best", "ours last", "published\n(epoch)", "Δ ours − published\n(compared epoch)",
               "95% CI\n(compared epoch)", "inside"]
    rows = []
    for _, r in t.iterrows():
        when = r["compared_at"]
        inside = _inside(r[f"{when}_inside"])
        rows.append([
            r["subject"], str(int(r["seeds"])),
            _cell(r["best_mean"]) + (f" ± {r['best_sd']:.2f}" if _num(r["best_sd"]) else ""),
            _cell(r["last_mean"]) + (f" ± {r['last_sd']:.2f}" if _num(r["last_sd"]) else ""),
            f"{r['published_top1']:.2f} ({epoch_words(r['published_epoch'])})",
            f"{r[f'{when}_diff']:+.2f} ({when})",
            f"{_cell(r[f'{when}_ci_low'])}–{_cell(r[f'{when}_ci_high'])}" if inside is not None else "–",
            "–" if inside is None else ("yes" if inside else "no")])
    return columns, rows


def reproduction_section(pdf, t: pd.DataFrame, summaries: list[pd.DataFrame]) -> None:
    """``t``: the reproduction table; ``summaries``: the tables of the families it reads (the data sets
    they trained on are named when none has a published number)."""
    fig = page()
    heading(fig, "4 Reproduction: ours against the published numbers")
    if t.empty:
        datasets = sorted({str(d) for s in summaries for d in s.get("dataset", pd.Series(dtype=str)).dropna()})
        text(fig, 0.91, no_published_numbers(datasets), size=10, width=95)
        save(pdf, fig)
        return
    y = text(fig, 0.91, INTRO, size=8, width=120)
    sentences = [sentence(r) for _, r in t.iterrows()]
    for start in range(0, len(sentences), SENTENCES_PER_PAGE):
        if start:
            save(pdf, fig)
            fig = page()
            heading(fig, "4 Reproduction (continued)")
            y = 0.91
        text(fig, y - 0.01, "\n\n".join(sentences[start:start + SENTENCES_PER_PAGE]), size=8, width=120)
    save(pdf, fig)
    sources = "; ".join(f"{s} ({epoch_words(e)})" for s, e in
                        t[["published_source", "published_epoch"]].drop_duplicates().itertuples(index=False))
    columns, rows = table_rows(t)
    for start in range(0, len(rows), ROWS_PER_PAGE):
        fig = page()
        heading(fig, "4 Reproduction: the table (results/tables/reproduction.csv)")
        y = text(fig, 0.92, "Test top-1 in %. Sources, each with the epoch it states — " + sources + ".", size=8,
                 width=120, style="italic")
        chunk = rows[start:start + ROWS_PER_PAGE]
        height = 0.02 * (len(chunk) + 2)
        ax = fig.add_axes([0.02, y - 0.01 - height, 0.96, height])
        ax.axis("off")
        cells = ax.table(cellText=chunk, colLabels=columns, colWidths=COLUMN_WIDTHS, loc="upper center",
                         cellLoc="center")
        cells.auto_set_font_size(False)
        cells.set_fontsize(6)
        cells.scale(1, 1.3)
        save(pdf, fig)
