"""Tables (pandas) from metrics.json and benchmark files: one module per report section."""

import json
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from kdpipe.errors import InputError
from kdpipe.io import atomic_write_text, write_json

# Read by every table, and written by every training job (kdpipe.training.run) at the top level.
METRICS_KEYS = ("run", "seed", "config", "best", "last")


class MetricsFileError(InputError):
    """A metrics.json that is not what a training job writes (damaged, truncated, edited by hand, or
    from an older kdpipe): deleting it makes Snakemake retrain that run."""


def _damaged(path, why: str) -> MetricsFileError:
    why = " ".join(why.split())  # one line, whatever the error said
    return MetricsFileError(f"{path} is damaged ({why}): delete it and run Snakemake again, which retrains that run")


def read_metrics(path) -> dict:
    """A run's metrics.json, checked to be a JSON object with the keys every run writes."""
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise MetricsFileError(f"cannot read {path}: {err.strerror}") from None
    try:
        m = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise _damaged(path, f"not UTF-8 text: byte {err.object[err.start]:#04x} at offset {err.start}") from None
    except json.JSONDecodeError as err:
        raise _damaged(path, f"not JSON: {err}") from None
    if not isinstance(m, dict):
        raise _damaged(path, f"a JSON {type(m).__name__}, not an object")
    missing = [k for k in METRICS_KEYS if k not in m]
    if missing:
        raise _damaged(path, f"no {', '.join(repr(k) for k in missing)}")
    for key in ("config", "best", "last"):
        if not isinstance(m[key], dict):
            raise _damaged(path, f"{key!r} is not an object")
    return m


@contextmanager
def metrics_file(path):
    """``with metrics_file(path) as m:`` the file's metrics; a key or a value the block finds missing
    or of the wrong kind is reported as damage to that file, not as a traceback."""
    m = read_metrics(path)
    try:
        yield m
    except KeyError as err:
        raise _damaged(path, f"no key {err}") from None
    except (TypeError, ValueError, IndexError, AttributeError) as err:
        raise _damaged(path, f"a value it cannot use: {err}") from None


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
