"""Self-distillation tables: one row per run, and per method and exit mean ± std over seeds, with
BYOT's paired difference (by seed) from each of what it is read against (plan.SELF_DISTILL_REFERENCES)."""

import pandas as pd

from kdpipe.tables import headline, metrics_file, seed_stats, write_tables
from kdpipe.tables.kd import paired_difference
from kdpipe.plan import METHOD_LABELS, SELF_DISTILL_REFERENCES

COMPARED = "self_distill"  # the method read against SELF_DISTILL_REFERENCES

EXITS = ["exit1", "exit2", "exit3", "exit4", "ensemble"]
FIGURES = ["best_top1", "last_top1", "best_top5", "last_top5"]


def trained_exits(method: str) -> list[str]:
    """The baseline trains its last exit only: its other heads (and their ensemble) are untrained."""
    return ["exit4"] if method == "baseline" else EXITS


def exit_difference(runs: pd.DataFrame, method: str, reference: str, name: str) -> dict:
    """``method`` − ``reference`` at exit ``name``, paired by seed (kdpipe.tables.kd.paired_difference),
    as ``vs_<reference>_<figure>_...`` columns; nothing where either did not train that exit."""
    if name not in trained_exits(method) or name not in trained_exits(reference):
        return {}
    def at_exit(m):
        return runs[runs["method"] == m].rename(columns={f"{fig}_{name}": fig for fig in ("best_top1", "last_top1")})
    ours, ref = at_exit(method), at_exit(reference)
    if ours.empty or ref.empty:
        return {}
    out = {}
    for fig in ("best_top1", "last_top1"):
        out.update({f"vs_{reference}_{k}": v for k, v in paired_difference(ours, ref, fig).items()})
    return out


def sd_run_rows(metrics_files) -> pd.DataFrame:
    rows = []
    for path in metrics_files:
        with metrics_file(path) as m:
            cfg = m["config"]
            row = {
                "run": m["run"], "dataset": cfg["dataset"], "dataset_source": cfg.get("dataset_source", ""),
                "method": cfg["method"], "arch": cfg["arch"], "width": cfg["width"], "seed": m["seed"],
                "epochs": cfg["train"]["epochs"], "best_epoch": m["best"]["epoch"], "train_images": m["train_images"],
                "wall_time_s": m["wall_time_s"], "device": m["device"], "host": m.get("host", ""),
                "git_commit": m["git_commit"], **{f"sd_{k}": v for k, v in cfg.get("self_distill", {}).items()},
            }
            for cost in m["exits"]:
                name = cost["exit"] if cost["exit"] == "ensemble" else f"exit{cost['exit']}"
                row[f"params_{name}"], row[f"macs_{name}"] = cost["params"], cost["macs"]
                for when in ("best", "last"):
                    for k in ("top1", "top5"):
                        row[f"{when}_{k}_{name}"] = m[when][f"{k}_{name}"]
            rows.append(row)
    return pd.DataFrame(rows).sort_values(["dataset", "method", "arch", "seed"]).reset_index(drop=True)


def sd_summary(runs: pd.DataFrame) -> pd.DataFrame:
    out = []
    for (dataset, method, arch), g in runs.groupby(["dataset", "method", "arch"], sort=False):
        first = g.iloc[0]
        for name in EXITS:
            row = {"dataset": dataset, "dataset_source": first["dataset_source"], "method": method,
                   "label": METHOD_LABELS[method], "arch": arch, "width": int(first["width"]), "exit": name,
                   "trained": name in trained_exits(method), "params": int(first[f"params_{name}"]),
                   "macs": int(first[f"macs_{name}"]), "seeds": len(g), "epochs": int(first["epochs"]),
                   "train_images": int(first["train_images"])}
            for k in ("temperature", "alpha", "lam", "detach_teacher"):
                row[k] = first.get(f"sd_{k}")
            for fig in FIGURES:
                row[f"{fig}_mean"], row[f"{fig}_std"] = seed_stats(g[f"{fig}_{name}"])
            if method == COMPARED:
                on_set = runs[(runs["dataset"] == dataset) & (runs["arch"] == arch)]
                for reference in SELF_DISTILL_REFERENCES:
                    row.update(exit_difference(on_set, method, reference, name))
            out.append(row)
    return pd.DataFrame(out)


def self_distill_tables(metrics_files, *, runs_csv, summary_csv, headline_json=None) -> None:
    runs = sd_run_rows(metrics_files)
    write_tables(runs, sd_summary(runs), runs_csv=runs_csv, summary_csv=summary_csv, headline_json=headline_json,
                 headline_of=lambda s: headline(s[s["trained"]], ["method", "exit"], ["best_top1", "last_top1"]))
