"""A sweep's table: accuracy over seeds at each swept value of one setting (``classify.sweeps``).

A sweep point is an ordinary classifier run whose run config holds the swept value: a method's setting
(``kd_soft.temperature`` -> ``config.method_params.temperature`` of a ``kd_soft`` run) or the transfer-set
size (``train_subset`` -> ``config.train_subset``). For a method's setting, the student-alone runs of
the same seeds, which do not read it, are the curve's reference (one row per student architecture).
Mutual learning is read on its first student, as the other tables read it first.
"""

import pandas as pd

from kdpipe import methods
from kdpipe.errors import InputError
from kdpipe.io import atomic_write_text
from kdpipe.plan import TRANSFER_SET  # the one setting that is not a method's: the transfer-set size
from kdpipe.tables import metrics_file, seed_stats
from kdpipe.tables.kd import entry_label, kd_run_rows

COLUMNS = ["sweep", "setting", "teacher", "student", "method", "label", "role", "value", "seeds",
           "best_top1_mean", "best_top1_std", "last_top1_mean", "last_top1_std", "runs"]


def value_text(value) -> str:
    """A swept value as the chart's ticks and the report's sentences print it: 4, 0.5, 400."""
    return f"{value:g}" if isinstance(value, (int, float)) else str(value)


def split_setting(setting: str) -> tuple[str, str] | None:
    """``<method>.<key>`` -> (method, key); ``train_subset`` -> None. Anything else is the user's typo."""
    if setting == TRANSFER_SET:
        return None
    method, _, key = setting.partition(".")
    if method not in methods.METHODS or key not in methods.METHODS[method].params:
        known = [TRANSFER_SET, *(f"{m}.{k}" for m, spec in methods.METHODS.items() for k in spec.params)]
        raise InputError(f"sweep setting {setting!r} is neither {TRANSFER_SET} nor a registered method's setting "
                         f"(<method>.<key>); known: {', '.join(known)}")
    return method, key


def swept_value(path, setting: str):
    """The value of ``setting`` this run trained with, read from its metrics.json's run config."""
    method_key = split_setting(setting)
    with metrics_file(path) as m:
        cfg = m["config"]
        if method_key is None:
            value = cfg.get(TRANSFER_SET)
            if value is None:
                raise InputError(f"{path}: its run config has no {TRANSFER_SET} (it trained on every image), so it "
                                 f"is no point of a {TRANSFER_SET} sweep; list only the sweep's runs")
            return value
        method, key = method_key
        params = cfg.get("method_params") or {}
        if cfg["method"] != method or key not in params:
            raise InputError(f"{path}: its run config (method {cfg['method']!r}) has no method_params.{key}, so "
                             f"it is no point of the {setting} sweep; list only {method} runs as its points (the student "
                             f"alone goes under --reference)")
        return params[key]


def _first_students(paths) -> pd.DataFrame:
    """One row per run: its first student (mutual learning's student 1), as kd_run_rows reads it."""
    runs = kd_run_rows(paths)
    return runs[runs["member"] == 1]


def _grouped(runs: pd.DataFrame, keys: list[str]) -> list[dict]:
    out = []
    for key, g in runs.groupby(keys, sort=False, dropna=False):
        row = dict(zip(keys, key))
        g = g.sort_values("seed")
        row["seeds"] = len(g)
        for fig in ("best_top1", "last_top1"):
            row[f"{fig}_mean"], row[f"{fig}_std"] = seed_stats(g[fig])
        row["runs"] = ";".join(g["run"])
        out.append(row)
    return out


def _value_dtype(values: list) -> str | None:
    """Integers stay integers in the CSV (``4``, not ``4.0``; a reference row's value left empty)."""
    if values and all(type(v) is int for v in values):
        return "Int64"
    return "float64" if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values) else None


def sweep_table(name: str, setting: str, metrics: list, reference: list) -> pd.DataFrame:
    """One row per (teacher, student arch, method, value) of the sweep's points, and one per (student
    arch, method) of its reference runs: mean ± std over seeds at the best and last epoch."""
    values = [swept_value(p, setting) for p in metrics]  # checks every point before any table is made
    points = []
    for path, value in zip(metrics, values):
        rows = _first_students([path]).copy()
        rows["value"] = [value] * len(rows)
        points.append(rows)
    rows = []
    if points:
        for row in _grouped(pd.concat(points, ignore_index=True), ["teacher", "arch", "method", "value"]):
            rows.append({**row, "role": "point"})
    if reference:
        for row in _grouped(_first_students(reference), ["teacher", "arch", "method"]):
            rows.append({**row, "role": "reference", "value": None})
    measured = ["teacher", "arch", "method", "role", "value", "seeds", "best_top1_mean", "best_top1_std",
                "last_top1_mean", "last_top1_std", "runs"]
    table = pd.DataFrame(rows, columns=measured).rename(columns={"arch": "student"})
    table["sweep"], table["setting"] = name, setting
    table["teacher"] = table["teacher"].fillna("")
    table["label"] = [entry_label(m, 1) for m in table["method"]]
    dtype = _value_dtype(values)
    if dtype:
        table["value"] = table["value"].astype(dtype)
    order = {m: i for i, m in enumerate(methods.order())}
    table["_order"] = table["method"].map(order)
    # a reference row (no value) before the points of the same method it sits beside
    table = table.sort_values(["teacher", "student", "_order", "value"], na_position="first")
    return table.drop(columns="_order")[COLUMNS].reset_index(drop=True)


def sweep_tables(name: str, setting: str, metrics: list, reference: list, *, out_csv) -> pd.DataFrame:
    """Write the sweep's table as CSV (``results/tables/sweep_<name>.csv``)."""
    table = sweep_table(name, setting, list(metrics), list(reference or []))
    atomic_write_text(table.to_csv(index=False), out_csv)
    return table


def read_sweep_table(path) -> pd.DataFrame:
    """A table ``sweep_tables`` wrote; a method without a teacher (the student alone) has an empty teacher."""
    try:
        table = pd.read_csv(path, dtype={"teacher": str, "student": str, "method": str, "runs": str})
    except FileNotFoundError:
        raise InputError(f"{path} does not exist: make it with `kdpipe tables-sweep` (Snakemake does, for every "
                         "sweep in classify.sweeps)") from None
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise InputError(f"{path} is not a sweep table (no {', '.join(missing)}): delete it and run Snakemake again")
    table["teacher"] = table["teacher"].fillna("")
    return table


def sweep_pairs(table: pd.DataFrame) -> list[tuple[str, str]]:
    """The (teacher, student) pairs of the sweep's points; a student no taught point has gets ("", student)."""
    points = table[table["role"] == "point"]
    taught = points[points["teacher"] != ""]
    pairs = list(dict.fromkeys(zip(taught["teacher"], taught["student"])))
    untaught = [s for s in dict.fromkeys(points["student"]) if s not in {p[1] for p in pairs}]
    return pairs + [("", s) for s in untaught]


def pair_rows(table: pd.DataFrame, teacher: str, student: str) -> pd.DataFrame:
    """One pair's rows: its taught points and every row without a teacher on its student (the student
    alone, its reference, mutual learning), which belong to each pair with that student."""
    return table[(table["student"] == student) & table["teacher"].isin([teacher, ""])]
