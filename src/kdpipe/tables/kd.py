"""Tables from metrics.json files: one row per trained student, and the methods × pairs summary.

Which methods exist, their labels and how many students a run trains come from the method registry
(``kdpipe.methods``), the published numbers from kdpipe.references (the architecture and method
registries); nothing here names a method.
"""

import pandas as pd

from kdpipe import methods
from kdpipe.plan import pair_id
from kdpipe.references import published_top1
from kdpipe.tables import headline, metrics_file, seed_stats, write_tables

FIGURES = ["best_top1", "last_top1", "best_top5", "last_top5"]
# Two-sided 5% critical values of Student's t by degrees of freedom (seeds - 1): what a paired
# t-test over seeds would need |mean| / (std / sqrt(n)) to exceed (standard t tables).
T_CRITICAL_5 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262,
                10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110,
                18: 2.101, 19: 2.093, 20: 2.086, 25: 2.060, 30: 2.042}


def t_critical(seeds: int) -> float:
    """The 5% two-sided critical t of a paired test over ``seeds`` seeds (NaN below two seeds); between
    tabulated degrees of freedom the next smaller one's (a little strict), beyond 30 the normal 1.96."""
    dof = seeds - 1
    if dof < 1:
        return float("nan")
    if dof > max(T_CRITICAL_5):
        return 1.96
    return T_CRITICAL_5[max(k for k in T_CRITICAL_5 if k <= dof)]


def entry_name(method: str, member: int) -> str:
    """A summary row's key: the method for its first student, ``dml_s2`` for mutual learning's second."""
    return f"{method}{methods.score_suffix(member)}"


def entry_label(method: str, member: int) -> str:
    if method == "teacher" or methods.get(method).students == 1:
        return methods.label(method)
    return f"{methods.label(method)} ({member})"


def _settings(cfg: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in cfg.get("method_params", {}).items())


def kd_run_rows(metrics_files) -> pd.DataFrame:
    """One row per trained student: a mutual-learning run gives a row for each of its students."""
    rows = []
    for path in metrics_files:
        with metrics_file(path) as m:
            cfg = m["config"]
            method = cfg["method"]
            students = 1 if method == "teacher" else methods.get(method).students
            for member in range(1, students + 1):
                sfx = methods.score_suffix(member)
                best = m["best"] if member == 1 else m[f"best_top1{sfx}"]
                rows.append({
                    "run": m["run"], "dataset": cfg["dataset"], "dataset_source": cfg.get("dataset_source", ""),
                    "method": method, "member": member, "entry": entry_name(method, member), "arch": cfg["arch"],
                    "teacher": cfg.get("teacher", ""), "seed": m["seed"],
                    "best_top1": best[f"top1{sfx}"], "best_top5": best[f"top5{sfx}"], "best_epoch": best["epoch"],
                    "last_top1": m["last"][f"top1{sfx}"], "last_top5": m["last"][f"top5{sfx}"],
                    "epochs": cfg["train"]["epochs"], "train_images": m["train_images"], "params": m["params"],
                    "settings": _settings(cfg), "wall_time_s": m["wall_time_s"], "device": m["device"],
                    "host": m.get("host", ""), "git_commit": m["git_commit"],
                    "imported_from": m["source"]["url"] if m.get("imported") else "",
                    # which source and which checkpoint: every seed of an imported teacher reads the same one
                    "imported_source": m["source"]["name"] if m.get("imported") else "",
                    "checkpoint_sha256": m.get("checkpoint_sha256", "") if m.get("imported") else "",
                })
    order = {name: i for i, name in enumerate(methods.order())}
    df = pd.DataFrame(rows)
    df["_order"] = df["method"].map(order)
    df = df.sort_values(["dataset", "_order", "member", "arch", "teacher", "seed"]).drop(columns="_order")
    return df.reset_index(drop=True)


def pair_members(runs: pd.DataFrame, dataset: str, teacher: str, student: str) -> dict[str, pd.DataFrame]:
    """The students one teacher→student comparison reads, by entry (seeds as rows), in registry order.

    A method that needs a teacher is read for this teacher; one without (alone, mutual learning)
    for the student's architecture, whichever pair listed it.
    """
    on_set = runs[runs["dataset"] == dataset]
    out = {"teacher": on_set[(on_set["method"] == "teacher") & (on_set["arch"] == teacher)]}
    for name, spec in methods.METHODS.items():
        rows = on_set[(on_set["method"] == name) & (on_set["arch"] == student)]
        if spec.needs_teacher:
            rows = rows[rows["teacher"] == teacher]
        for member in range(1, spec.students + 1):
            out[entry_name(name, member)] = rows[rows["member"] == member]
    return out


def paired_difference(g: pd.DataFrame, alone: pd.DataFrame, figure: str) -> dict:
    """Per-seed difference method − alone (same seed: same split, same initial student), its mean
    and sample std over the seeds both have, how many seeds favour the method, and the paired
    t statistic with the 5% critical value for that many seeds."""
    both = g.set_index("seed")[figure].to_frame("m").join(alone.set_index("seed")[figure].rename("a"), how="inner")
    d = both["m"] - both["a"]
    n = len(d)
    mean, std = (d.mean(), d.std(ddof=1)) if n > 1 else (d.mean() if n else float("nan"), float("nan"))
    t = mean / (std / n ** 0.5) if n > 1 and std > 0 else float("nan")
    if n < 2:
        verdict = "one seed: no spread"
    elif abs(mean) > std:
        verdict = "larger than spread"
    else:
        verdict = "within spread"
    return {f"{figure}_diff_mean": mean, f"{figure}_diff_std": std, f"{figure}_paired_seeds": n,
            f"{figure}_seeds_better": int((d > 0).sum()), f"{figure}_paired_t": t,
            f"{figure}_t_critical": t_critical(n),
            f"{figure}_verdict": verdict}


def kd_summary(runs: pd.DataFrame) -> pd.DataFrame:
    """Methods × pairs: per pair, the teacher and every method's students, mean ± std over seeds at
    the best and the last epoch, the paired difference from the student alone (``best_top1_diff_mean``,
    ...), for a method with a teacher also from each control (``vs_<control>_best_top1_diff_mean``, ...),
    and the published reference (a separate column, never mixed with what was measured)."""
    taught = runs[(runs["teacher"].fillna("") != "") & (runs["method"] != "teacher")]
    pairs = taught[["dataset", "dataset_source", "teacher", "arch"]].drop_duplicates().itertuples(index=False)
    out = []
    for dataset, source, teacher, student in pairs:
        groups = pair_members(runs, dataset, teacher, student)
        for entry, g in groups.items():
            if g.empty:
                continue
            method, member = g["method"].iloc[0], int(g["member"].iloc[0])
            imported = g["imported_from"].fillna("")
            imported = imported[imported != ""]
            # published numbers are CIFAR-100's, for the teacher or a method's (first) student
            ref, ref_source = (published_top1(method, teacher, student) if source == "cifar100" and member == 1
                               else (None, ""))
            row = {"dataset": dataset, "dataset_source": source, "pair": pair_id(teacher, student),
                   "teacher": teacher, "student": student, "method": method, "member": member, "entry": entry,
                   "label": entry_label(method, member), "imported_from": "; ".join(imported.unique()), "arch": g["arch"].iloc[0],
                   "params": int(g["params"].iloc[0]), "seeds": len(g),
                   "train_images": int(g["train_images"].iloc[0]), "epochs": int(g["epochs"].iloc[0]),
                   "settings": g["settings"].iloc[0], "reference_top1": ref,
                   "reference_source": ref_source if ref is not None else ""}
            for fig in FIGURES:
                row[f"{fig}_mean"], row[f"{fig}_std"] = seed_stats(g[fig])
            for ref in methods.compared_with(method):  # the student alone, then (for a taught method) each control
                ref_rows = groups.get(ref, pd.DataFrame())
                if ref_rows.empty:
                    continue
                prefix = "" if ref == methods.BASELINE else f"vs_{ref}_"
                for fig in ("best_top1", "last_top1"):
                    row.update({prefix + k: v for k, v in paired_difference(g, ref_rows, fig).items()})
            out.append(row)
    return pd.DataFrame(out)


def kd_tables(metrics_files, *, runs_csv, summary_csv, headline_json=None, cost_metrics=None) -> None:
    """``cost_metrics``: every training run's metrics.json (all families), whose overlaps on a shared
    GPU decide each run's share of it (kdpipe.tables.cost); the classifier runs' alone by default."""
    from kdpipe.tables.cost import run_costs, summary_cost

    runs = kd_run_rows(metrics_files)
    summary = summary_cost(kd_summary(runs), runs, run_costs(cost_metrics or metrics_files))
    write_tables(runs, summary, runs_csv=runs_csv, summary_csv=summary_csv, headline_json=headline_json,
                 headline_of=lambda s: headline(s, ["pair", "entry"], ["best_top1", "last_top1"]))
