"""Wall time of the whole demo pipeline, and how well it used the cores.

    python benchmarks/demo_pipeline.py [--cores 2]

Copies the workflow into a temporary folder, runs the demo preset from nothing to
results/report.pdf, and prints the wall time against the 5-minute budget, the sum of the jobs'
wall and CPU times (from Snakemake's benchmark files), and the ratios that say how busy the
cores were, and when each training job started and finished (from its metrics.json
``started_at``/``finished_at``), so the critical path can be read: teachers should start first
(the train rule's priorities, kdpipe.schedule). Installation is not counted.
"""

import argparse
import shutil
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from workflow_copy import copy_workflow  # noqa: E402

BUDGET_S = 300


def print_job_timeline(workdir: Path, t0: float) -> None:
    """Each training job's start and end, in seconds after the pipeline started, in start order."""
    rows = []
    for path in (workdir / "results").glob("*/*/*/metrics.json"):
        m = json.loads(path.read_text())
        if "started_at" in m and "finished_at" in m:
            rows.append((m["started_at"] - t0, m["finished_at"] - t0, f"{m['family']}/{m['run']}"))
    print("training jobs (s after the pipeline started)")
    print(f"{'start':>7} {'end':>7} {'took':>6}  job")
    for start, end, job in sorted(rows):
        print(f"{start:7.1f} {end:7.1f} {end - start:6.1f}  {job}")


def bench_main(description: str, **build) -> int:
    """Parse --cores and --keep, build in a temporary folder (``run_demo(..., **build)``), remove it
    unless --keep: the command line of this benchmark and of benchmarks/sweep_demo.py."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder and print its path")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="kdpipe-bench-"))
    try:
        return run_demo(tmp, args, **build)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    return bench_main(__doc__.splitlines()[0])


def run_demo(tmp: Path, args, target: str = "results/report.pdf", configfiles=("presets/demo.yaml",),
             budget_s: float = BUDGET_S, after=None) -> int:
    """Build ``target`` with these config files in a fresh copy; print the timings against ``budget_s``
    (``after(workdir)`` prints what else a caller wants from the build, e.g. the sweep tables)."""
    workdir = copy_workflow(tmp / "demo")
    t0 = time.perf_counter()
    started = time.time()
    proc = subprocess.run(
        ["snakemake", target, "--cores", str(args.cores), "--configfile", *configfiles],
        cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        print(proc.stdout[-5000:])
        return 1
    rows = []
    for path in (workdir / "results" / "benchmarks").rglob("*.tsv"):
        b = pd.read_csv(path, sep="\t").iloc[0]
        rows.append({"rule": path.parent.name if path.parent.name != "benchmarks" else path.stem,
                     "wall_s": float(b["s"]), "cpu_s": float(b["cpu_time"])})
    jobs = pd.DataFrame(rows)
    per_rule = jobs.groupby("rule").agg(jobs=("wall_s", "size"), wall_s=("wall_s", "sum"), cpu_s=("cpu_s", "sum"))
    print(per_rule.round(1).to_string())
    print()
    print(f"pipeline wall time          {wall:8.1f} s   (budget {budget_s:.0f} s: {'within' if wall <= budget_s else 'OVER'})")
    print(f"sum of job wall times       {jobs['wall_s'].sum():8.1f} s   parallelism {jobs['wall_s'].sum() / wall:.2f} of {args.cores} cores")
    print(f"sum of job CPU times        {jobs['cpu_s'].sum():8.1f} s   core utilisation {jobs['cpu_s'].sum() / (wall * args.cores):.0%}")
    print(f"ideal wall (sum / cores)    {jobs['wall_s'].sum() / args.cores:8.1f} s   wall / ideal {wall / (jobs['wall_s'].sum() / args.cores):.2f}")
    print(f"scheduling + startup        {wall - jobs['wall_s'].sum() / args.cores:8.1f} s   (wall minus ideal packing of the jobs)")
    print()
    print_job_timeline(workdir, started)
    if after is not None:
        after(workdir)
    if args.keep:
        print(f"kept: {workdir}")
    return 0 if wall <= budget_s else 2


if __name__ == "__main__":
    sys.exit(main())
