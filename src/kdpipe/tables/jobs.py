"""Each job's wall time and peak memory (Snakemake benchmark files), where it ran, how (training jobs:
precision and whether the step ran as CUDA graphs) and what it cost (device-hours, kdpipe.tables.cost),
from metrics.json."""

from pathlib import Path

import pandas as pd

from kdpipe.io import atomic_write_text
from kdpipe.tables import metrics_file
from kdpipe.tables.cost import cost_rows

COST_COLUMNS = ["device_model", "device_s", "shared_by", "cost_h", "cost_on", "imported"]


def read_benchmark(path) -> dict:
    """One Snakemake benchmark file: wall seconds (s), peak resident memory (max_rss, MB), cpu_time."""
    b = pd.read_csv(path, sep="\t").iloc[0]
    path = Path(path)
    return {"rule": path.parent.name, "job": path.stem, "wall_s": float(b["s"]),
            "max_rss_mb": pd.to_numeric(b.get("max_rss"), errors="coerce"),
            "cpu_s": pd.to_numeric(b.get("cpu_time"), errors="coerce")}


def jobs_table(benchmark_files, metrics_files, *, out_csv) -> pd.DataFrame:
    """Each job's wall time and peak memory, with where training jobs ran and what they cost (from
    their metrics.json: a training run whose benchmark file is missing still gets its row and cost)."""
    where, records = {}, []
    for path in metrics_files:
        with metrics_file(path) as m:
            records.append(m)
            graphs = m.get("cuda_graphs")
            where[f"{m['config']['dataset']}-{m['family']}-{m['run']}"] = {
                "device": m["device"], "host": m.get("host", ""), "slurm_job_id": m.get("slurm_job_id", ""),
                # runs from before these keys existed: eager fp32 (the only loop there was)
                "precision": m.get("precision", "fp32"), "cuda_graphs": "" if graphs is None and "precision" in m
                else ("yes" if graphs else "no")}
    # Shares of a GPU are worked out over every training job at once (jobs of all families share GPUs).
    costs = cost_rows(records).set_index("job")
    present = [p for p in benchmark_files if Path(p).exists()]
    for p in sorted(set(map(str, benchmark_files)) - set(map(str, present))):
        print(f"kdpipe: no benchmark file {p} (made elsewhere or by hand); its wall time is left out of the jobs table")
    rows = [{**read_benchmark(p), "device": "", "host": "", "slurm_job_id": "", "precision": "", "cuda_graphs": ""}
            for p in present]
    listed = {row["job"] for row in rows}
    rows += [{"rule": "import_teacher" if costs.loc[job, "imported"] else "train", "job": job}
             for job in costs.index if job not in listed]
    for row in rows:
        row.update(where.get(row["job"], {}))
        if row["job"] in costs.index:
            row.update(costs.loc[row["job"], COST_COLUMNS].to_dict())
    columns = ["rule", "job", "wall_s", "max_rss_mb", "cpu_s", "device", "host", "slurm_job_id", "precision",
               "cuda_graphs", *COST_COLUMNS]
    table = pd.DataFrame(rows, columns=columns).sort_values(["rule", "job"]).reset_index(drop=True)
    atomic_write_text(table.to_csv(index=False), out_csv)
    return table
