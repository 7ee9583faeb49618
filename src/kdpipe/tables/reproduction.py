"""The reproduction (gap) table: every published number our runs can be compared with, beside ours.

One row per published number that a run of this build measures: the teachers, every method and
pair with a number in the registries (kdpipe.references.published: architectures for the teachers
and the students alone, kdpipe.methods per pair) and BYOT's exits. Ours at the best and at the last
epoch as mean ± sample std over the n seeds, a 95% t-interval for our mean (mean ± t·sd/√n, t the
two-sided 5% critical value for n - 1 degrees of freedom), the published number with the epoch
convention its source states, the difference (ours - published) and whether the published number
lies inside our interval. Published numbers are CIFAR-100's: a run on another data set has none.

An imported teacher is the same checkpoint whatever the seed, so its n is the number of distinct
checkpoints (checkpoint_sha256), not of seeds: one checkpoint has no sd, no interval and no inside.

Reads metrics.json files only (as every table does), through the KD and self-distillation tables'
own row readers; nothing here names a method.
"""

import pandas as pd

from kdpipe import methods
from kdpipe.io import atomic_write_text, write_json
from kdpipe.plan import METHOD_LABELS, pair_id
from kdpipe.references import LAST_EPOCH, Published, byot_published, published
from kdpipe.tables.kd import entry_label, kd_run_rows, pair_members, t_critical
from kdpipe.tables.self_distill import EXITS, sd_run_rows

PUBLISHED_DATASET = "cifar100"  # the data set every registered published number is on
WHEN = ("best", "last")
COLUMNS = [
    "dataset", "family", "group", "entry", "subject", "method", "label", "teacher", "student", "exit", "seeds",
    "epochs", "train_images", "imported", "imported_from",
    *(f"{w}_{k}" for w in WHEN for k in ("mean", "sd", "ci_low", "ci_high", "diff", "inside")),
    "published_top1", "published_epoch", "published_source", "compared_at",
]


def t_interval(values) -> dict:
    """Mean, sample sd, n and the 95% t-interval of the mean over seeds (no sd nor interval below two)."""
    values = pd.Series(values, dtype=float).dropna()
    n = len(values)
    mean = values.mean() if n else float("nan")
    sd = values.std(ddof=1) if n > 1 else float("nan")
    half = t_critical(n) * sd / n ** 0.5 if n > 1 else float("nan")
    return {"n": n, "mean": mean, "sd": sd, "ci_low": mean - half, "ci_high": mean + half}


def compared_at(epoch: str) -> str:
    """Which of our figures a sentence quotes: the source's epoch where it states one, else the best
    epoch (what most tables report), said as such."""
    return "last" if epoch == LAST_EPOCH else "best"


def gap_row(values: dict[str, pd.Series], ref: Published) -> dict:
    """Ours (best and last: per-seed top-1) against one published number."""
    row = {"published_top1": ref.top1, "published_epoch": ref.epoch, "published_source": ref.source,
           "compared_at": compared_at(ref.epoch)}
    for when in WHEN:
        s = t_interval(values[when])
        row["seeds"] = s["n"]
        inside = (s["ci_low"] <= ref.top1 <= s["ci_high"]) if s["n"] > 1 else None
        row.update({f"{when}_mean": s["mean"], f"{when}_sd": s["sd"], f"{when}_ci_low": s["ci_low"],
                    f"{when}_ci_high": s["ci_high"], f"{when}_diff": s["mean"] - ref.top1, f"{when}_inside": inside})
    return row


def measurements(g: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``g`` that are independent measurements: every trained run, but an imported
    checkpoint once however many seeds evaluated it (the same sha256 scores the same)."""
    imported = g["imported_from"].fillna("") != ""
    if not imported.any():
        return g
    sha = g["checkpoint_sha256"].fillna("") if "checkpoint_sha256" in g else pd.Series("", index=g.index)
    key = sha.where(imported, "run:" + g["run"].astype(str))
    return g[~key.duplicated()]


def _subject(method: str, label: str, teacher: str, student: str) -> str:
    if method == "teacher":
        return f"{teacher} (teacher)"
    if methods.get(method).needs_teacher:
        return f"{teacher} → {student}, {label}"
    return f"{student}, {label}"


def kd_gaps(runs: pd.DataFrame) -> list[dict]:
    """Rows for the classifiers: each published number once, however many pairs read it (a teacher
    of two pairs, the student alone of one architecture)."""
    if runs.empty:
        return []
    runs = runs[runs["dataset_source"] == PUBLISHED_DATASET]
    taught = runs[(runs["teacher"].fillna("") != "") & (runs["method"] != "teacher")]
    pairs = taught[["dataset", "teacher", "arch"]].drop_duplicates().itertuples(index=False)
    out, seen = [], set()
    for dataset, teacher, student in pairs:
        for entry, g in pair_members(runs, dataset, teacher, student).items():
            if g.empty or int(g["member"].iloc[0]) != 1:  # published numbers are a method's first student's
                continue
            method = g["method"].iloc[0]
            ref = published(method, teacher, student)
            taught_here = method == "teacher" or methods.get(method).needs_teacher
            key = (dataset, entry, g["arch"].iloc[0], teacher if taught_here else "")
            if ref is None or key in seen:
                continue
            seen.add(key)
            label = entry_label(method, 1)
            imported = g["imported_from"].fillna("")
            sources = g["imported_source"].fillna("") if "imported_source" in g else imported
            group = teacher if method == "teacher" else pair_id(teacher, student) if taught_here else student
            out.append({
                "dataset": dataset, "family": "classify", "group": group, "entry": entry,
                "subject": _subject(method, label, teacher, student), "method": method, "label": label,
                "teacher": teacher if method != "teacher" else "", "student": g["arch"].iloc[0], "exit": "",
                "epochs": int(g["epochs"].iloc[0]), "train_images": int(g["train_images"].iloc[0]),
                "imported": bool((imported != "").any()),
                "imported_from": "; ".join(s for s in sources.unique() if s),
                **gap_row({w: measurements(g)[f"{w}_top1"] for w in WHEN}, ref)})
    return out


def sd_gaps(runs: pd.DataFrame) -> list[dict]:
    """Rows for the multi-exit runs whose exits have a published number (BYOT's)."""
    if runs.empty:
        return []
    out = []
    runs = runs[runs["dataset_source"] == PUBLISHED_DATASET]
    for (dataset, method, arch, width), g in runs.groupby(["dataset", "method", "arch", "width"], sort=False):
        for name in EXITS:
            ref = byot_published(method, arch, width, name)
            if ref is None:
                continue
            label = f"{METHOD_LABELS.get(method, method)}, exit {name[-1]}/4"
            out.append({
                "dataset": dataset, "family": "self_distill", "group": arch, "entry": f"{method}_{name}",
                "subject": f"{arch} {label}", "method": method, "label": label, "teacher": "", "student": arch,
                "exit": name, "epochs": int(g["epochs"].iloc[0]), "train_images": int(g["train_images"].iloc[0]),
                "imported": False, "imported_from": "", **gap_row({w: g[f"{w}_top1_{name}"] for w in WHEN}, ref)})
    return out


def reproduction_rows(kd_runs: pd.DataFrame, sd_runs: pd.DataFrame) -> pd.DataFrame:
    rows = kd_gaps(kd_runs) + sd_gaps(sd_runs)
    df = pd.DataFrame(rows, columns=COLUMNS)
    for when in WHEN:
        df[f"{when}_inside"] = df[f"{when}_inside"].astype("boolean")  # empty for a single seed
    return df


def headline(table: pd.DataFrame) -> dict:
    """What `dvc metrics show` prints: per group and entry, the published number, our mean at the
    epoch compared, and the difference (an empty object when nothing is published for this data set)."""
    out: dict = {}
    for _, r in table.iterrows():
        when = r["compared_at"]
        out.setdefault(str(r["group"]), {})[str(r["entry"])] = {
            "published": float(r["published_top1"]), "ours": float(r[f"{when}_mean"]),
            "diff": float(r[f"{when}_diff"]), "seeds": int(r["seeds"])}
    return out


def _rows_of(reader, files) -> pd.DataFrame:
    return reader(files) if files else pd.DataFrame()


def reproduction_table(classify_metrics, self_distill_metrics, *, out_csv, headline_json=None) -> pd.DataFrame:
    table = reproduction_rows(_rows_of(kd_run_rows, list(classify_metrics)),
                              _rows_of(sd_run_rows, list(self_distill_metrics)))
    atomic_write_text(table.to_csv(index=False), out_csv)
    if headline_json is not None:
        write_json(headline(table), headline_json)
    return table

