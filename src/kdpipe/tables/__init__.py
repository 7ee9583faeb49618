"""Tables (pandas) from metrics.json and benchmark files: one module per report section."""

import pandas as pd

from kdpipe.io import atomic_write_text, write_json


def seed_stats(values: pd.Series) -> tuple[float, float]:
    """Mean and sample std over seeds; the std of a single seed is NaN (shown without ± in the report)."""
    return values.mean(), values.std(ddof=1) if len(values) > 1 else float("nan")


def headline(summary: pd.DataFrame, keys: list[str], figures: list[str]) -> dict:
    """Mean and std over seeds of ``figures``, nested under each row's ``keys`` (DVC metrics).

    ``dvc metrics show`` flattens the nesting into one column per number, e.g.
    ``resnet14-to-resnet8.kd_soft.best_top1.mean``.
    """
    out: dict = {}
    for _, row in summary.iterrows():
        node = out
        for key in keys:
            node = node.setdefault(str(row[key]), {})
        for fig in figures:
            node[fig] = {"mean": float(row[f"{fig}_mean"]), "std": float(row[f"{fig}_std"]), "seeds": int(row["seeds"])}
    return out


def write_tables(runs: pd.DataFrame, summary: pd.DataFrame, *, runs_csv, summary_csv, headline_json=None,
                 headline_of=None) -> None:
    """The per-run and the mean ± std table as CSV; with ``headline_json``, ``headline_of(summary)``
    as JSON (the numbers `dvc metrics show` prints)."""
    atomic_write_text(runs.to_csv(index=False), runs_csv)
    atomic_write_text(summary.to_csv(index=False), summary_csv)
    if headline_json is not None:
        write_json(headline_of(summary), headline_json)
