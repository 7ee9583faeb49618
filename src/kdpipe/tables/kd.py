"""Tables from metrics.json files (and benchmark files): one row per run, and mean ± std over seeds."""

import pandas as pd

from kdpipe.io import read_json
from kdpipe.tables import headline, seed_stats, write_tables
from kdpipe.plan import METHOD_LABELS, pair_id

METHOD_ORDER = ["teacher", "alone", "kd_soft", "kd_hard"]
FIGURES = ["best_top1", "last_top1", "best_top5", "last_top5"]


def kd_run_rows(metrics_files) -> pd.DataFrame:
    rows = []
    for path in metrics_files:
        m = read_json(path)
        cfg = m["config"]
        rows.append({
            "run": m["run"], "dataset": cfg["dataset"], "dataset_source": cfg.get("dataset_source", ""),
            "method": cfg["method"], "arch": cfg["arch"], "teacher": cfg.get("teacher", ""), "seed": m["seed"],
            "best_top1": m["best"]["top1"], "best_top5": m["best"]["top5"], "best_epoch": m["best"]["epoch"],
            "last_top1": m["last"]["top1"], "last_top5": m["last"]["top5"], "epochs": cfg["train"]["epochs"],
            "train_images": m["train_images"], "params": m["params"],
            "temperature": cfg.get("kd", {}).get("temperature"), "alpha": cfg.get("kd", {}).get("alpha"),
            "wall_time_s": m["wall_time_s"], "device": m["device"], "host": m.get("host", ""),
            "git_commit": m["git_commit"],
        })
    return pd.DataFrame(rows).sort_values(["dataset", "method", "arch", "teacher", "seed"]).reset_index(drop=True)


def pair_members(runs: pd.DataFrame, dataset: str, teacher: str, student: str) -> dict[str, pd.DataFrame]:
    """The runs one teacher→student comparison reads, by method (seeds as rows)."""
    on_set = runs[runs["dataset"] == dataset]
    is_student = on_set["arch"] == student
    taught = is_student & (on_set["teacher"] == teacher)
    return {
        "teacher": on_set[(on_set["method"] == "teacher") & (on_set["arch"] == teacher)],
        "alone": on_set[(on_set["method"] == "alone") & is_student],
        "kd_soft": on_set[(on_set["method"] == "kd_soft") & taught],
        "kd_hard": on_set[(on_set["method"] == "kd_hard") & taught],
    }


def kd_summary(runs: pd.DataFrame) -> pd.DataFrame:
    """Per teacher→student pair: teacher, student alone, KD soft, KD hard, mean ± std over seeds."""
    kd = runs[runs["method"].isin(["kd_soft", "kd_hard"])]
    pairs = kd[["dataset", "dataset_source", "teacher", "arch"]].drop_duplicates().itertuples(index=False)
    out = []
    for dataset, source, teacher, student in pairs:
        groups = pair_members(runs, dataset, teacher, student)
        for method in METHOD_ORDER:
            g = groups[method]
            if g.empty:
                continue
            row = {"dataset": dataset, "dataset_source": source, "pair": pair_id(teacher, student),
                   "teacher": teacher, "student": student, "method": method, "label": METHOD_LABELS[method],
                   "arch": g["arch"].iloc[0], "params": int(g["params"].iloc[0]), "seeds": len(g),
                   "train_images": int(g["train_images"].iloc[0]), "epochs": int(g["epochs"].iloc[0]),
                   "temperature": g["temperature"].iloc[0], "alpha": g["alpha"].iloc[0]}
            for fig in FIGURES:
                row[f"{fig}_mean"], row[f"{fig}_std"] = seed_stats(g[fig])
            out.append(row)
    return pd.DataFrame(out)


def kd_tables(metrics_files, *, runs_csv, summary_csv, headline_json=None) -> None:
    runs = kd_run_rows(metrics_files)
    write_tables(runs, kd_summary(runs), runs_csv=runs_csv, summary_csv=summary_csv, headline_json=headline_json,
                 headline_of=lambda s: headline(s, ["pair", "method"], ["best_top1", "last_top1"]))
