"""What each number cost: device-hours per training run, read from what its job recorded in
metrics.json (never estimated), and per method and pair with the teacher's share.

The rule (docs/gpu.md "What each number cost"):
- A run's time on its device runs from ``device_claimed_at`` (its GPU slot was claimed; waiting for
  one costs no device time) to ``finished_at``; runs from before these keys count ``wall_time_s``.
- Jobs share a GPU when they record the same host, SLURM job id and device (``cuda:1 (NVIDIA H100)``)
  and their times overlap: while k of them run together each counts 1/k of that stretch, so the
  shares of a busy GPU add up to the time it was busy. A job that overlapped no other counts whole.
- A CPU job counts its wall time on the CPU (CPU-hours: not multiplied by its threads), labelled so;
  GPU- and CPU-hours are never added together.
- An imported teacher (``imported: true``) costs 0: it was not trained here (its evaluation, seconds
  on the CPU, is in the jobs table).
- A teacher's cost is divided equally among the student runs that learn from it.
- A job killed and resumed counts its last attempt only (the one that wrote metrics.json).
"""

import re
from collections import defaultdict

import pandas as pd

from kdpipe import methods
from kdpipe.tables import metrics_file

GPU, CPU = "GPU", "CPU"
_MODEL = re.compile(r"\((.+)\)\s*$")


def device_kind(device: str) -> str:
    return CPU if str(device).strip().lower() == "cpu" else GPU


def device_model(device: str) -> str:
    """What the report names a device by: the GPU model (``cuda:1 (NVIDIA H100)`` → NVIDIA H100), or CPU."""
    if device_kind(device) == CPU:
        return CPU
    found = _MODEL.search(str(device))
    return found.group(1) if found else str(device)


def device_interval(m: dict) -> tuple[float | None, float | None, float]:
    """(start, end, seconds) of a run's time on its device, from its metrics.json."""
    end = m.get("finished_at")
    start = m.get("device_claimed_at", m.get("started_at"))
    if start is not None and end is not None and end >= start:
        return float(start), float(end), float(end) - float(start)
    return None, None, float(m.get("wall_time_s") or 0.0)


def shared_seconds(intervals: list[tuple[float, float]]) -> list[float]:
    """Each interval's share of one device: every stretch during which k intervals overlap counts
    1/k to each of them. Pure: [(0, 100), (50, 150)] → [75.0, 75.0]."""
    cuts = sorted({t for iv in intervals for t in iv})
    shares = [0.0] * len(intervals)
    for a, b in zip(cuts, cuts[1:]):
        inside = [i for i, (s, e) in enumerate(intervals) if s <= a and b <= e]
        for i in inside:
            shares[i] += (b - a) / len(inside)
    return shares


def cost_rows(records: list[dict]) -> pd.DataFrame:
    """One row per training run (``job`` as the jobs table names it, dataset-family-run): its time on
    its device, the GPU model or CPU, how many jobs shared it on average, and the hours it counts."""
    rows = []
    for m in records:
        start, end, seconds = device_interval(m)
        device = str(m.get("device", ""))
        rows.append({"job": f"{m['config']['dataset']}-{m['family']}-{m['run']}", "dataset": m["config"]["dataset"],
                     "family": m["family"], "run": m["run"], "device": device, "cost_on": device_kind(device),
                     "device_model": device_model(device), "imported": bool(m.get("imported")),
                     "device_s": seconds, "_start": start, "_end": end,
                     "_key": (m.get("host", ""), str(m.get("slurm_job_id", "")), device)})
    by_device = defaultdict(list)
    for i, r in enumerate(rows):
        if r["cost_on"] == GPU and r["_start"] is not None:
            by_device[r["_key"]].append(i)
    counted = [r["device_s"] for r in rows]
    for members in by_device.values():
        for i, share in zip(members, shared_seconds([(rows[i]["_start"], rows[i]["_end"]) for i in members])):
            counted[i] = share
    for r, c in zip(rows, counted):
        r["counted_s"] = 0.0 if r["imported"] else c
        # Mean number of jobs on the device over this job's time (1 when it had it to itself).
        r["shared_by"] = r["device_s"] / c if c > 0 else 1.0
        r["cost_h"] = r["counted_s"] / 3600
    columns = ["job", "dataset", "family", "run", "device", "device_model", "cost_on", "imported", "device_s",
               "shared_by", "cost_h"]
    return pd.DataFrame(rows, columns=columns)


def run_costs(metrics_files) -> pd.DataFrame:
    """cost_rows of the runs these metrics.json files describe (every family: jobs of all families share GPUs)."""
    records = []
    for path in metrics_files:
        with metrics_file(path) as m:
            records.append(m)
    return cost_rows(records)


def _hours(costs: pd.DataFrame, job: str) -> tuple[float, float]:
    """(GPU-hours, CPU-hours) a job counts; (0, 0) when it is not among the costs."""
    r = costs[costs["job"] == job]
    if r.empty:
        return 0.0, 0.0
    r = r.iloc[0]
    return (r["cost_h"], 0.0) if r["cost_on"] == GPU else (0.0, r["cost_h"])


def student_costs(runs: pd.DataFrame, costs: pd.DataFrame) -> pd.DataFrame:
    """Per classifier run of ``runs`` (kd_run_rows: run, dataset, method, arch, teacher, seed, member):
    its own GPU- and CPU-hours and, for a student with a teacher, the teacher's share (the teacher's
    hours divided by the student runs of that dataset that name the same teacher and seed)."""
    from kdpipe.plan import teacher_run

    firsts = runs[runs["member"] == 1]
    taught = firsts[(firsts["method"] != "teacher") & (firsts["teacher"].fillna("") != "")]
    learners = taught.groupby(["dataset", "teacher", "seed"]).size()
    out = []
    for _, r in firsts.iterrows():
        gpu, cpu = _hours(costs, f"{r['dataset']}-classify-{r['run']}")
        t_gpu = t_cpu = 0.0
        if r["method"] != "teacher" and str(r["teacher"] or "") not in ("", "nan"):
            n = learners[(r["dataset"], r["teacher"], r["seed"])]
            t_gpu, t_cpu = (h / n for h in _hours(costs, f"{r['dataset']}-classify-{teacher_run(r['teacher'], r['seed'])}"))
        out.append({"run": r["run"], "dataset": r["dataset"], "own_gpu_h": gpu, "own_cpu_h": cpu,
                    "teacher_gpu_h": t_gpu, "teacher_cpu_h": t_cpu, "gpu_h": gpu + t_gpu, "cpu_h": cpu + t_cpu})
    return pd.DataFrame(out, columns=["run", "dataset", "own_gpu_h", "own_cpu_h", "teacher_gpu_h", "teacher_cpu_h",
                                      "gpu_h", "cpu_h"])


def summary_cost(summary: pd.DataFrame, runs: pd.DataFrame, costs: pd.DataFrame) -> pd.DataFrame:
    """``summary`` (kd_summary) with what one model of each row cost, mean over its seeds, the teacher's
    share included (``cost_gpu_h``, ``cost_cpu_h``, ``cost_teacher_gpu_h``, ``cost_teacher_cpu_h``), the
    unit its cost is read in (``cost_unit``: GPU-h when any of it ran on a GPU, else CPU-h) and the gain
    over the student alone per hour of that unit (``best_top1_gain_per_h``, ``last_top1_gain_per_h``)."""
    per_run = student_costs(runs, costs).set_index(["dataset", "run"])
    out = summary.copy()
    for col in ("cost_gpu_h", "cost_cpu_h", "cost_teacher_gpu_h", "cost_teacher_cpu_h",
                "best_top1_gain_per_h", "last_top1_gain_per_h"):
        out[col] = float("nan")
    out["cost_unit"] = ""
    for i, row in out.iterrows():
        if row["method"] == "teacher":
            chosen = runs[(runs["dataset"] == row["dataset"]) & (runs["method"] == "teacher")
                          & (runs["arch"] == row["teacher"]) & (runs["member"] == 1)]
        else:
            chosen = runs[(runs["dataset"] == row["dataset"]) & (runs["method"] == row["method"])
                          & (runs["arch"] == row["student"]) & (runs["member"] == 1)]
            if methods.get(row["method"]).needs_teacher:  # this pair's teacher; alone and DML: any pair's
                chosen = chosen[chosen["teacher"] == row["teacher"]]
        keys = [(d, r) for d, r in zip(chosen["dataset"], chosen["run"]) if (d, r) in per_run.index]
        if not keys:
            continue
        c = per_run.loc[keys].mean()
        out.loc[i, ["cost_gpu_h", "cost_cpu_h", "cost_teacher_gpu_h", "cost_teacher_cpu_h"]] = [
            c["gpu_h"], c["cpu_h"], c["teacher_gpu_h"], c["teacher_cpu_h"]]
        # An imported teacher costs nothing here: no unit, no rate.
        unit, hours = ("GPU-h", c["gpu_h"]) if c["gpu_h"] > 0 else ("CPU-h", c["cpu_h"]) if c["cpu_h"] > 0 else ("", 0.0)
        out.loc[i, "cost_unit"] = unit
        for fig in ("best_top1", "last_top1"):
            gain = row.get(f"{fig}_diff_mean")
            if hours > 0 and gain is not None and not pd.isna(gain):
                out.loc[i, f"{fig}_gain_per_h"] = gain / hours
    return out


def _true(value) -> bool:
    """A flag as cost_rows wrote it, or as read back from a CSV (True, "True"; empty for other jobs)."""
    return value is True or str(value).strip().lower() == "true"


def total_cost(costs: pd.DataFrame) -> dict:
    """What all the training runs cost together: hours per GPU model and on the CPU, runs, imports.
    ``costs`` is cost_rows' table or the jobs table (its rows without a cost are not training runs)."""
    costs = costs[costs["cost_h"].notna()]
    imported = costs["imported"].map(_true)
    trained = costs[~imported]
    by_model = trained[trained["cost_on"] == GPU].groupby("device_model")["cost_h"].sum().sort_index()
    return {"gpu_h": float(by_model.sum()), "gpu_models": {k: float(v) for k, v in by_model.items()},
            "cpu_h": float(trained.loc[trained["cost_on"] == CPU, "cost_h"].sum()),
            "runs": int(len(trained)), "imported": int(imported.sum())}


def _h(hours: float) -> str:
    return f"{hours:.3g}" if hours < 10 else f"{hours:.1f}"


def cost_sentence(costs: pd.DataFrame) -> str:
    """One sentence for the report's first page: what the report's training cost, on which devices
    (``costs``: cost_rows' table or the jobs table; one without cost columns predates them)."""
    if "cost_h" not in costs.columns:
        return "What the training cost was not recorded (a jobs table from before kdpipe counted it)."
    t = total_cost(costs)
    if t["runs"] == 0 and t["imported"] == 0:
        return "No training run recorded what it cost."
    parts = []
    if t["gpu_models"]:
        parts.append(f"{_h(t['gpu_h'])} GPU-hours (" + ", ".join(f"{_h(h)} on {m}" for m, h in t["gpu_models"].items())
                     + ")")
    if t["cpu_h"] > 0 or not parts:
        parts.append(f"{_h(t['cpu_h'])} CPU-hours (wall time of jobs on the CPU)")
    imported = (f"; {t['imported']} imported teacher{'s' if t['imported'] != 1 else ''} cost 0 (not trained here)"
                if t["imported"] else "")
    return (f"Training the {t['runs']} runs of this report cost " + " and ".join(parts) + imported
            + ", read from each job's metrics.json; a job that shared a GPU with k−1 others counts 1/k of that time.")
